package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// maxLine bounds one stored event when reading.
const maxLine = 16 << 20

// Position names a line of the log: file and 1-based line number.
type Position struct {
	File string
	Line int
}

func (p Position) String() string { return fmt.Sprintf("%s line %d", filepath.Base(p.File), p.Line) }

// VerifyError is a break in the chain: where, and what it means.
type VerifyError struct {
	Position
	Reason string
}

func (e *VerifyError) Error() string { return e.Position.String() + ": " + e.Reason }

// VerifyResult is what an intact log holds.
type VerifyResult struct {
	Events int
	Files  int
}

// Verify checks the whole log at path — rotated files oldest first, then
// the current one — and returns a *VerifyError naming the first line
// where it was edited, where an event was removed or reordered, or where
// events were cut off from the end (detected with the head file, which
// records the last position made durable).
func Verify(path string) (VerifyResult, error) {
	files, err := listFiles(path)
	if err != nil {
		return VerifyResult{}, err
	}
	var res VerifyResult
	var hd head
	hasHead := false
	if hf, err := os.Open(path + headSuffix); err == nil {
		hd, hasHead, err = readHead(hf)
		hf.Close()
		if err != nil {
			return res, err
		}
	}
	headSeen := false
	prev := GenesisHash
	var last Position
	for fi, lf := range files {
		f, err := os.Open(lf.Path)
		if errors.Is(err, os.ErrNotExist) && fi == len(files)-1 {
			continue // no current file yet
		}
		if err != nil {
			return res, fmt.Errorf("opening %s: %w", lf.Path, err)
		}
		res.Files++
		r := bufio.NewReaderSize(f, 1<<16)
		var offset int64
		line := 0
		for {
			b, err := readLine(r)
			if errors.Is(err, io.EOF) && len(b) == 0 {
				break
			}
			line++
			pos := Position{File: lf.Path, Line: line}
			if err != nil && !errors.Is(err, io.EOF) {
				f.Close()
				return res, fmt.Errorf("reading %s: %w", pos, err)
			}
			if errors.Is(err, io.EOF) {
				f.Close()
				return res, &VerifyError{pos, "incomplete last line (a write cut short by a crash; iamdb serve cuts it off when it starts)"}
			}
			offset += int64(len(b)) + 1
			p, perr := splitLine(b)
			if perr != nil {
				f.Close()
				return res, &VerifyError{pos, perr.Error()}
			}
			if err := p.check(); err != nil {
				f.Close()
				return res, &VerifyError{pos, err.Error()}
			}
			if p.prev != prev {
				f.Close()
				if res.Events == 0 {
					return res, &VerifyError{pos, "the first event does not start the log: it follows an event that is not in these files (an older file was removed?)"}
				}
				return res, &VerifyError{pos, fmt.Sprintf("the event does not follow %s: an event between them was removed, or events were reordered", last)}
			}
			prev = p.hash
			res.Events++
			last = pos
			if hasHead && lf.Seq == hd.Seq && offset == hd.Offset {
				if p.hash != hd.Hash {
					f.Close()
					return res, &VerifyError{pos, "the event differs from the one recorded as durable at this position"}
				}
				headSeen = true
			}
		}
		f.Close()
		if hasHead && !headSeen && lf.Seq >= hd.Seq && (hd.Offset > 0) {
			end := Position{File: lf.Path, Line: line}
			return res, &VerifyError{end, fmt.Sprintf("events are missing from the end: %s was written up to byte %d, it now ends at byte %d",
				filepath.Base(lf.Path), hd.Offset, offset)}
		}
	}
	if hasHead && !headSeen && hd.Offset > 0 {
		return res, &VerifyError{last, fmt.Sprintf("events are missing from the end: file %d of the log, written up to byte %d, is gone", hd.Seq, hd.Offset)}
	}
	return res, nil
}

// readLine reads one line without its newline; io.EOF with data means the
// last line has no newline.
func readLine(r *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		b, err := r.ReadSlice('\n')
		out = append(out, b...)
		if len(out) > maxLine {
			return nil, fmt.Errorf("a line longer than %d bytes", maxLine)
		}
		switch {
		case err == nil:
			return out[:len(out)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return out, err
		}
	}
}

// Record is one event as read back, with where it is.
type Record struct {
	Position
	Event *Event
	Raw   []byte // the stored line, without newline
}

// Read calls fn for every event of the log, oldest first. Lines that are
// not events (a torn last line) are skipped.
func Read(path string, fn func(Record) error) error {
	files, err := listFiles(path)
	if err != nil {
		return err
	}
	for _, lf := range files {
		if _, err := readFile(lf.Path, 0, 0, fn); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return err
		}
	}
	return nil
}

// readFile reads complete lines of path from byte offset (line numbers
// continue from line) and returns the offset after the last complete
// line.
func readFile(path string, offset int64, line int, fn func(Record) error) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return offset, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return offset, err
	}
	r := bufio.NewReaderSize(f, 1<<16)
	for {
		b, err := readLine(r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return offset, nil // an incomplete line waits for its end
			}
			return offset, fmt.Errorf("reading %s: %w", path, err)
		}
		offset += int64(len(b)) + 1
		line++
		var e Event
		if json.Unmarshal(b, &e) != nil {
			continue
		}
		if err := fn(Record{Position: Position{File: path, Line: line}, Event: &e, Raw: b}); err != nil {
			return offset, err
		}
	}
}

// Follow calls fn for every event appended to the current file from byte
// offset on, following rotations, until ctx is done. poll is how often it
// looks for new events.
func Follow(ctx context.Context, path string, offset int64, poll time.Duration, fn func(Record) error) error {
	f, err := os.Open(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var cur os.FileInfo
	if f != nil {
		cur, _ = f.Stat()
		f.Close()
	}
	line := 0
	if offset > 0 {
		// Line numbers in followed output are only informative; count
		// the lines before offset once.
		readFile(path, 0, 0, func(Record) error { line++; return nil })
	}
	for {
		n := line
		next, err := readFile(path, offset, line, func(r Record) error { n = r.Line; return fn(r) })
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		offset, line = next, n
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
		st, err := os.Stat(path)
		if err != nil {
			continue
		}
		if cur != nil && !os.SameFile(cur, st) {
			// Rotated: finish the old file (now the newest numbered one),
			// then start the new one from its beginning.
			if files, err := listFiles(path); err == nil && len(files) > 1 {
				readFile(files[len(files)-2].Path, offset, line, fn)
			}
			offset, line = 0, 0
		}
		cur = st
	}
}

// Filter selects events for `iamdb audit query`. Empty fields match
// everything.
type Filter struct {
	Principal string // userIdentity ARN, or the role a session belongs to
	User      string // IAM user, role or federated subject name
	DBUser    string
	Instance  string
	Event     string // eventName, case-insensitive
	Since     time.Time
	Until     time.Time
	Failed    bool // only events with an errorCode
}

// Match reports whether e passes the filter.
func (f Filter) Match(e *Event) bool {
	if f.Event != "" && !strings.EqualFold(f.Event, e.EventName) {
		return false
	}
	if f.Failed && e.ErrorCode == "" {
		return false
	}
	if !f.Since.IsZero() || !f.Until.IsZero() {
		t := e.Time()
		if !f.Since.IsZero() && t.Before(f.Since) || !f.Until.IsZero() && !t.Before(f.Until) {
			return false
		}
	}
	if f.DBUser != "" && param(e, "dbUser") != f.DBUser {
		return false
	}
	if f.Instance != "" && param(e, "instance") != f.Instance {
		return false
	}
	u := e.UserIdentity
	if f.Principal != "" {
		if u == nil {
			return false
		}
		ok := u.ARN == f.Principal || u.PrincipalID == f.Principal
		if sc := u.SessionContext; sc != nil && sc.SessionIssuer != nil && sc.SessionIssuer.ARN == f.Principal {
			ok = true
		}
		if !ok {
			return false
		}
	}
	if f.User != "" {
		if u == nil {
			return false
		}
		ok := u.UserName == f.User
		if sc := u.SessionContext; sc != nil {
			if sc.SessionIssuer != nil && sc.SessionIssuer.UserName == f.User || sc.SourceIdentity == f.User {
				ok = true
			}
			if w := sc.WebIDFederationData; w != nil && w.Attributes["sub"] == f.User {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func param(e *Event, key string) string {
	v, _ := e.RequestParameters[key].(string)
	return v
}
