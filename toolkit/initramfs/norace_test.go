//go:build !race

package initramfs

const raceEnabled = false
