//go:build race

package initramfs

// raceEnabled is true under the race detector, which makes decompressing
// hundreds of megabytes take minutes.
const raceEnabled = true
