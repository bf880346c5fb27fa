package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of FileOptions.
const (
	DefaultFsyncInterval = 100 * time.Millisecond
	DefaultMaxSize       = 100 << 20
)

// maxPending bounds the events queued for the writer; producers wait
// beyond it rather than let a stalled disk eat the memory.
const maxPending = 8192

// ErrClosed is returned by Emit after Close.
var ErrClosed = errors.New("audit: the log is closed")

// FileOptions tune a FileSink; the zero value is usable.
type FileOptions struct {
	// FsyncInterval bounds how long an event stays unsynced. Events a
	// caller waits for are written and fsynced at once, together with
	// whatever else arrived meanwhile (group commit); deferred events
	// (see Deferred) are fsynced at the latest after this interval.
	FsyncInterval time.Duration
	// MaxSize is the size at which the current file is rotated.
	MaxSize int64
	// FailClosed makes Emit return the error when an event cannot be
	// written, so that callers refuse what they were about to allow.
	// Otherwise the failure is logged and counted and Emit returns nil.
	FailClosed bool
	Logger     *slog.Logger
	Now        func() time.Time
}

// FileSink is the append-only, hash-chained, fsynced audit log in one
// file plus its rotated predecessors. It is an Emitter, safe for
// concurrent use; several processes may append to the same log (iamdb
// serve and management commands do): every write happens under an
// exclusive lock on the head file, after catching up with what the others
// wrote.
type FileSink struct {
	path string
	opt  FileOptions
	log  *slog.Logger
	now  func() time.Time
	lock *os.File // the head file

	mu       sync.Mutex
	cond     *sync.Cond
	pending  []*request
	closed   bool
	syncDue  bool
	armed    bool // a deferred fsync is scheduled
	done     chan struct{}
	lastErr  atomic.Pointer[error]
	failures atomic.Uint64
	written  atomic.Uint64

	// Writer goroutine only (and Open before it starts).
	f          *os.File
	size       int64  // bytes in f we know of
	prev       string // hash of the last event in the log
	seq        int    // number of the current file
	rotated    []logFile
	syncedSize int64
	syncedHash string
	buf        []byte
	// The head this writer last wrote and its length in bytes. While
	// headOurs (nobody else appended or rotated since), it is what the
	// head file holds, so advanceHead need not read the file.
	head     head
	headLen  int
	headOurs bool
}

type request struct {
	body []byte
	done chan error // nil: deferred, nobody waits
}

// OpenFile opens (creating it if needed) the log at path and resumes its
// chain from the last event. A torn last line — the tail of a write cut
// short by a crash, never acknowledged to anyone — is cut off and logged.
func OpenFile(path string, opt FileOptions) (*FileSink, error) {
	if opt.FsyncInterval <= 0 {
		opt.FsyncInterval = DefaultFsyncInterval
	}
	if opt.MaxSize <= 0 {
		opt.MaxSize = DefaultMaxSize
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s := &FileSink{path: path, opt: opt, log: opt.Logger.With("audit_file", path), now: opt.Now, done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit log: creating its directory: %w", err)
	}
	lock, err := os.OpenFile(path+headSuffix, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	s.lock = lock
	if err := s.withLock(s.open); err != nil {
		lock.Close()
		if s.f != nil {
			s.f.Close()
		}
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	go s.run()
	return s, nil
}

// Path is the current file's path.
func (s *FileSink) Path() string { return s.path }

func (s *FileSink) withLock(fn func() error) error {
	if err := flock(s.lock, syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", s.lock.Name(), err)
	}
	defer flock(s.lock, syscall.LOCK_UN)
	return fn()
}

// open opens the current file, repairs a torn tail and finds the chain's
// last hash. Called with the lock held.
func (s *FileSink) open() error {
	files, err := listFiles(s.path)
	if err != nil {
		return err
	}
	s.rotated, s.seq = files[:len(files)-1], files[len(files)-1].Seq
	s.headOurs = false
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.f = f
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if _, tornAt, err := lastLine(f, size); err != nil {
		return err
	} else if tornAt >= 0 {
		// Only a write cut short can end without a newline: the event
		// in it was never acknowledged, so it is not part of the log.
		if err := f.Truncate(tornAt); err != nil {
			return fmt.Errorf("cutting off the torn last line: %w", err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("cutting off the torn last line: %w", err)
		}
		s.log.Warn("audit log: cut off an incomplete last line left by a crash", "bytes", size-tornAt, "offset", tornAt)
		size = tornAt
	}
	s.size, s.syncedSize = size, size
	if s.prev, err = lastHash(f, size, s.rotated); err != nil {
		return err
	}
	s.syncedHash = s.prev
	return nil
}

// refresh catches up with other processes writing the same log: a file
// rotated under us is reopened, events appended by others move the end of
// the chain. Called with the lock held.
func (s *FileSink) refresh() error {
	if s.f == nil {
		return s.open()
	}
	fst, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", s.path, err)
	}
	pst, err := os.Stat(s.path)
	if err != nil || !os.SameFile(fst, pst) {
		s.f.Close()
		s.f = nil
		return s.open()
	}
	if fst.Size() != s.size {
		s.headOurs = false // another writer appended, and moved the head
		s.size, s.syncedSize = fst.Size(), fst.Size()
		if s.prev, err = lastHash(s.f, s.size, s.rotated); err != nil {
			return err
		}
		s.syncedHash = s.prev
	}
	return nil
}

// Emit appends e to the log. Unless ctx is Deferred it returns once e's
// group is fsynced. With FailClosed a failure to record e is returned;
// otherwise it is logged, counted and nil is returned.
func (s *FileSink) Emit(ctx context.Context, e *Event) error {
	e.fill(s.now())
	e.PrevHash, e.Hash = "", ""
	body, err := json.Marshal(e)
	if err != nil {
		return s.fail(fmt.Errorf("audit: encoding the %s event: %w", e.EventName, err))
	}
	r := &request{body: body}
	deferred := IsDeferred(ctx)
	if !deferred {
		r.done = make(chan error, 1)
	}
	s.mu.Lock()
	for len(s.pending) >= maxPending && !s.closed {
		s.cond.Wait()
	}
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.pending = append(s.pending, r)
	s.cond.Broadcast()
	s.mu.Unlock()
	if deferred {
		return nil
	}
	select {
	case err := <-r.done:
		if err != nil && s.opt.FailClosed {
			return err
		}
		return nil
	case <-ctx.Done():
		if s.opt.FailClosed {
			return fmt.Errorf("audit: waiting for the %s event to be written: %w", e.EventName, ctx.Err())
		}
		return nil
	}
}

// fail counts and logs an event that could not be recorded.
func (s *FileSink) fail(err error) error {
	s.failures.Add(1)
	s.lastErr.Store(&err)
	s.log.Error("audit log: cannot record events", "err", err, "fail_closed", s.opt.FailClosed)
	if s.opt.FailClosed {
		return err
	}
	return nil
}

// Err is the error of the last write when it failed, nil once a write
// succeeds again. Callers that fail closed check it before acting.
func (s *FileSink) Err() error {
	if p := s.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// WriteErrors counts failed writes (iamdb_audit_write_errors_total).
func (s *FileSink) WriteErrors() uint64 { return s.failures.Load() }

// Written counts events written.
func (s *FileSink) Written() uint64 { return s.written.Load() }

// Close writes and fsyncs what is queued and releases the files. Emit
// fails with ErrClosed afterwards.
func (s *FileSink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	<-s.done
	err := s.Err()
	if s.f != nil {
		if cerr := s.f.Close(); err == nil {
			err = cerr
		}
	}
	s.lock.Close()
	return err
}

// run is the writer: it takes every queued event at once, writes them in
// one write and, when anyone waits for one of them, fsyncs.
func (s *FileSink) run() {
	defer close(s.done)
	for {
		s.mu.Lock()
		for len(s.pending) == 0 && !s.closed && !s.syncDue {
			s.cond.Wait()
		}
		batch := s.pending
		s.pending = nil
		closing, sync := s.closed, s.syncDue
		s.syncDue = false
		s.cond.Broadcast() // producers waiting for room
		s.mu.Unlock()

		for _, r := range batch {
			if r.done != nil {
				sync = true
			}
		}
		sync = sync || closing
		err := s.commit(batch, sync)
		if err != nil {
			s.fail(err)
		} else if sync {
			s.lastErr.Store(nil)
		}
		for _, r := range batch {
			if r.done != nil {
				r.done <- err
			}
		}
		if err == nil && !sync && len(batch) > 0 {
			s.armSync()
		}
		if closing {
			return
		}
	}
}

// armSync schedules the fsync of deferred events.
func (s *FileSink) armSync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.armed {
		return
	}
	s.armed = true
	time.AfterFunc(s.opt.FsyncInterval, func() {
		s.mu.Lock()
		s.armed = false
		s.syncDue = true
		s.cond.Broadcast()
		s.mu.Unlock()
	})
}

// commit appends batch under the lock, rotating first when the current
// file would grow beyond MaxSize, and fsyncs when sync is set.
func (s *FileSink) commit(batch []*request, sync bool) error {
	return s.withLock(func() error {
		if err := s.refresh(); err != nil {
			return err
		}
		if len(batch) > 0 {
			buf := s.buf[:0]
			prev := s.prev
			for _, r := range batch {
				buf, prev = appendLine(buf, r.body, prev)
			}
			s.buf = buf[:0]
			if s.size > 0 && s.size+int64(len(buf)) > s.opt.MaxSize {
				if err := s.rotate(); err != nil {
					return err
				}
			}
			n, err := s.f.Write(buf)
			if err != nil {
				s.undo(s.size)
				return fmt.Errorf("appending %d events: %w", len(batch), err)
			}
			s.size += int64(n)
			s.prev = prev
			s.written.Add(uint64(len(batch)))
		}
		if !sync || s.size == s.syncedSize {
			return nil
		}
		if err := datasync(s.f); err != nil {
			// What the kernel did with the unsynced pages is unknown:
			// drop everything since the last good fsync so that the log
			// never holds events whose callers were told they failed.
			s.undo(s.syncedSize)
			s.size, s.prev = s.syncedSize, s.syncedHash
			return fmt.Errorf("fsync: %w", err)
		}
		s.syncedSize, s.syncedHash = s.size, s.prev
		return s.advanceHead()
	})
}

func (s *FileSink) undo(size int64) {
	if err := s.f.Truncate(size); err != nil {
		s.log.Error("audit log: cannot remove a partial write", "err", err)
	}
}

// advanceHead records the durable end of the log, unless another writer
// already recorded a later one.
func (s *FileSink) advanceHead() error {
	h := head{Seq: s.seq, Offset: s.syncedSize, Hash: s.syncedHash}
	prevLen := -1 // unknown: writeHead truncates after writing
	if s.headOurs {
		if !h.after(s.head) {
			return nil
		}
		prevLen = s.headLen
	} else if cur, ok, err := readHead(s.lock); err == nil && ok && !h.after(cur) {
		return nil
	}
	n, err := writeHead(s.lock, h, prevLen)
	if err != nil {
		s.headOurs = false
		return err
	}
	s.head, s.headLen, s.headOurs = h, n, true
	return nil
}

// rotate renames the current file to the next number and starts a new
// one. The chain continues: the new file's first event chains to the
// last of the renamed one.
func (s *FileSink) rotate() error {
	if s.size != s.syncedSize {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("fsync before rotating: %w", err)
		}
		s.syncedSize, s.syncedHash = s.size, s.prev
	}
	if err := s.advanceHead(); err != nil {
		return err
	}
	rotatedPath := s.path + "." + strconv.Itoa(s.seq)
	if err := os.Rename(s.path, rotatedPath); err != nil {
		return fmt.Errorf("rotating: %w", err)
	}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_APPEND|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("rotating: %w", err)
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		s.log.Warn("audit log: fsync of the directory after rotating", "err", err)
	}
	s.f.Close()
	s.f = f
	s.rotated = append(s.rotated, logFile{Path: rotatedPath, Seq: s.seq})
	s.seq++
	s.size, s.syncedSize = 0, 0
	s.log.Info("audit log rotated", "rotated_to", rotatedPath)
	return nil
}

// FailsClosed reports whether Emit returns write failures.
func (s *FileSink) FailsClosed() bool { return s.opt.FailClosed }

// OneShot is an Emitter for short-lived commands: each Emit opens the
// log, appends and fsyncs the event and closes the log again, so a
// command holds nothing open and needs no Close. Errors follow
// Options.FailClosed as with FileSink.
type OneShot struct {
	Path    string
	Options FileOptions
}

// Emit records e.
func (o OneShot) Emit(ctx context.Context, e *Event) error {
	s, err := OpenFile(o.Path, o.Options)
	if err != nil {
		if o.Options.Logger != nil {
			o.Options.Logger.Error("audit log: cannot record events", "err", err)
		}
		if o.Options.FailClosed {
			return err
		}
		return nil
	}
	err = s.Emit(context.WithoutCancel(ctx), e)
	if cerr := s.Close(); err == nil && cerr != nil && o.Options.FailClosed {
		err = cerr
	}
	return err
}

// Err reports whether the log can be opened for writing now.
func (o OneShot) Err() error {
	f, err := os.OpenFile(o.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// FailsClosed reports Options.FailClosed.
func (o OneShot) FailsClosed() bool { return o.Options.FailClosed }
