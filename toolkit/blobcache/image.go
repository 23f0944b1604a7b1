package blobcache

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vmscript/vmscript/toolkit/iso"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// FromImage caches the regular file at p of an ISO image (or of a
// squashfs inside one), following symlinks; the key is the host file's
// identity and the file's path, size and time in the image.
func (c *Cache) FromImage(ctx context.Context, im *iso.Image, p string) (Blob, error) {
	e, err := im.Resolve(p)
	if err != nil {
		return Blob{}, err
	}
	if !e.IsRegular() {
		return Blob{}, vmerr.New(vmerr.Usage, "%s: %s is not a regular file (%s)", im.Name(), e.Path, e.Type()).With("path", e.Path)
	}
	key, err := FileKey(hostFile(im.Name()), "image="+im.Name(), "path="+e.Path,
		fmt.Sprintf("size=%d", e.Size), fmt.Sprintf("mtime=%d", e.ModTime.UnixNano()))
	if err != nil {
		return Blob{}, err
	}
	return c.Fetch(ctx, Source{Key: key, Name: im.Name() + ":" + e.Path, Size: e.Size,
		Open: func() (io.ReadCloser, error) { return im.Open(e.Path) }})
}

// hostFile finds the host file of an image name: the name itself, or for
// "x.iso:/live/fs.squashfs" the part before the first ":/" that is a file.
func hostFile(name string) string {
	if st, err := os.Stat(name); err == nil && !st.IsDir() {
		return name
	}
	for i := 0; i < len(name); {
		j := strings.Index(name[i:], ":/")
		if j < 0 {
			break
		}
		if st, err := os.Stat(name[:i+j]); err == nil && !st.IsDir() {
			return name[:i+j]
		}
		i += j + 2
	}
	return name
}
