package machine

import (
	"github.com/vmscript/vmscript/toolkit/screen"
)

// Screen returns the guest's display and keyboard (see package screen):
// the VGA text screen read exactly, graphics modes by OCR, keys typed at a
// pace boot menus keep up with. It is made on first use, with its private
// directory for QEMU's dumps, and closed by Stop.
func (m *Machine) Screen() (*screen.Screen, error) {
	m.screenOnce.Do(func() {
		m.screen, m.screenErr = screen.New(m.VM, screen.Options{Name: m.Name(), Run: m.run})
	})
	return m.screen, m.screenErr
}

// closeScreen closes the screen if it was made.
func (m *Machine) closeScreen() {
	m.screenOnce.Do(func() {}) // none from now on
	if m.screen != nil {
		m.screen.Close()
	}
}
