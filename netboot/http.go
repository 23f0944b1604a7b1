package netboot

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"time"
)

func (s *Server) startHTTP() {
	s.httpSrv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		_ = s.httpSrv.Serve(s.httpLn)
	}()
}

// countingWriter counts body bytes and remembers the status and the first
// write error.
type countingWriter struct {
	http.ResponseWriter
	n      int64
	status int
	err    error
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

func (s *Server) serveHTTP(w http.ResponseWriter, req *http.Request) {
	s.reqWG.Add(1)
	defer s.reqWG.Done()
	r := Request{Proto: "http", Op: req.Method, Client: req.RemoteAddr, Start: time.Now(), Size: -1, Seq: s.begin(),
		File: printable(req.URL.Path)}
	cw := &countingWriter{ResponseWriter: w}
	fail := func(outcome string, code int, reason string) {
		r.Outcome, r.Reason, r.Status = outcome, reason, code
		http.Error(cw, reason, code)
		s.record(r)
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		fail(Refused, http.StatusMethodNotAllowed, fmt.Sprintf("method %s on a read-only server", printable(req.Method)))
		return
	}
	if s.closing.Load() {
		fail(Refused, http.StatusServiceUnavailable, "server is closing")
		return
	}
	name, err := CleanName(req.URL.Path)
	if err != nil {
		fail(Refused, http.StatusForbidden, err.Error())
		return
	}
	r.File = name
	c, err := s.open(name)
	if errors.Is(err, errNotFound) {
		fail(NotFound, http.StatusNotFound, err.Error())
		return
	}
	if err != nil {
		fail(Refused, http.StatusForbidden, err.Error())
		return
	}
	defer c.close()
	r.Source, r.Size = c.source, c.size
	http.ServeContent(cw, req, "", c.modTime, c.r)
	r.Bytes, r.Status = cw.n, cw.status
	want, _ := strconv.ParseInt(cw.Header().Get("Content-Length"), 10, 64)
	switch {
	case cw.err != nil:
		r.Outcome, r.Reason = Aborted, "client went away: "+cw.err.Error()
	case req.Method == http.MethodHead:
		r.Outcome = Served
	case cw.status >= 400:
		r.Outcome, r.Reason = Refused, http.StatusText(cw.status)
	case cw.status == http.StatusOK || cw.status == http.StatusPartialContent:
		if cw.n < want {
			r.Outcome, r.Reason = Aborted, fmt.Sprintf("sent %d of %d bytes", cw.n, want)
		} else {
			r.Outcome = Served
		}
	default:
		r.Outcome, r.Reason = Served, http.StatusText(cw.status)
	}
	s.record(r)
}
