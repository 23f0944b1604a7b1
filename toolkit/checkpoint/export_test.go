package checkpoint

// SetMaxBandwidth throttles migrations (for the timeout test) and returns
// the function that undoes it.
func SetMaxBandwidth(bytesPerSecond int64) (restore func()) {
	old := maxBandwidth
	maxBandwidth = bytesPerSecond
	return func() { maxBandwidth = old }
}
