package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func testEvent(i int) *Event {
	return &Event{EventSource: SourceDB, EventName: NameConnect, UserIdentity: &UserIdentity{Type: TypeUnknown, UserName: fmt.Sprintf("u%d", i)},
		RequestParameters: map[string]any{"instance": "orders", "dbUser": "app", "n": i}}
}

// writeLog writes n events to a fresh log, rotating at maxSize.
func writeLog(t testing.TB, n int, maxSize int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, err := OpenFile(path, FileOptions{MaxSize: maxSize, FailClosed: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := s.Emit(context.Background(), testEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func readLines(t testing.TB, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))[:bytes.Count(b, []byte("\n"))]
}

func writeLines(t testing.TB, path string, lines [][]byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyIntactLog(t *testing.T) {
	path := writeLog(t, 50, 0)
	res, err := Verify(path)
	if err != nil || res.Events != 50 || res.Files != 1 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	var n int
	Read(path, func(r Record) error {
		if r.Event.EventVersion != EventVersion || r.Event.EventID == "" || !strings.HasSuffix(r.Event.EventTime, "Z") {
			t.Fatalf("event %d not filled in: %+v", n, r.Event)
		}
		if n == 0 && r.Event.PrevHash != GenesisHash {
			t.Fatalf("first event chains to %q", r.Event.PrevHash)
		}
		n++
		return nil
	})
	if n != 50 {
		t.Fatalf("read %d events", n)
	}
}

// TestTamper edits real log files the ways an intruder or an accident
// would and checks that Verify names the first broken line, also across
// a rotation boundary.
func TestTamper(t *testing.T) {
	// Each event is ~400 bytes: 3 KB per file gives several files.
	const events, maxSize = 40, 3000
	type tamper struct {
		name string
		file int // index into listFiles (last = current)
		do   func(t *testing.T, path string) int
		want string // part of the reason
	}
	editByte := func(line int) func(*testing.T, string) int {
		return func(t *testing.T, p string) int {
			ls := readLines(t, p)
			ls[line] = bytes.Replace(ls[line], []byte(`"app"`), []byte(`"apq"`), 1)
			writeLines(t, p, ls)
			return line + 1
		}
	}
	deleteLine := func(line int) func(*testing.T, string) int {
		return func(t *testing.T, p string) int {
			ls := readLines(t, p)
			writeLines(t, p, append(ls[:line:line], ls[line+1:]...))
			return line + 1 // the line that took its place is the first broken one
		}
	}
	swap := func(a int) func(*testing.T, string) int {
		return func(t *testing.T, p string) int {
			ls := readLines(t, p)
			ls[a], ls[a+1] = ls[a+1], ls[a]
			writeLines(t, p, ls)
			return a + 1
		}
	}
	for _, tc := range []tamper{
		{"edit a byte in the current file", -1, editByte(1), "altered"},
		{"edit a byte in a rotated file", 0, editByte(2), "altered"},
		{"delete a line", -1, deleteLine(1), "removed"},
		{"delete the first line of a rotated file", 1, deleteLine(0), "removed"},
		{"swap two lines", 0, swap(1), "reordered"},
		{"delete the last line of the current file", -1, func(t *testing.T, p string) int {
			ls := readLines(t, p)
			writeLines(t, p, ls[:len(ls)-1])
			return len(ls) - 1
		}, "missing from the end"},
		{"truncate the tail mid-line", -1, func(t *testing.T, p string) int {
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-30], 0o600)
			return bytes.Count(b, []byte("\n"))
		}, "incomplete last line"},
		{"delete the whole current file's content", -1, func(t *testing.T, p string) int {
			os.WriteFile(p, nil, 0o600)
			return 0
		}, "missing from the end"},
		{"remove the oldest file", 0, func(t *testing.T, p string) int {
			os.Remove(p)
			return 1
		}, "does not start the log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeLog(t, events, maxSize)
			files, _ := listFiles(path)
			if len(files) < 3 {
				t.Fatalf("want rotation: only %d files", len(files))
			}
			if _, err := Verify(path); err != nil {
				t.Fatalf("untouched log: %v", err)
			}
			i := tc.file
			if i < 0 {
				i = len(files) + i
			}
			target := files[i].Path
			line := tc.do(t, target)
			_, err := Verify(path)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify after tampering = %v, want a VerifyError", err)
			}
			if !strings.Contains(ve.Reason, tc.want) {
				t.Fatalf("reason %q, want %q", ve.Reason, tc.want)
			}
			wantFile := target
			if tc.name == "remove the oldest file" {
				wantFile = files[1].Path
			}
			if tc.name == "delete the whole current file's content" {
				wantFile = files[len(files)-1].Path
			}
			if ve.File != wantFile || ve.Line != line {
				t.Fatalf("Verify names %s, want %s line %d (%s)", ve.Position, filepath.Base(wantFile), line, ve.Reason)
			}
		})
	}
}

func TestRotationKeepsTheChain(t *testing.T) {
	path := writeLog(t, 30, 2000)
	files, _ := listFiles(path)
	if len(files) < 3 {
		t.Fatalf("%d files", len(files))
	}
	for i, f := range files[:len(files)-1] {
		if want := fmt.Sprintf("%s.%d", path, i+1); f.Path != want {
			t.Fatalf("rotated file %d is %s, want %s", i, f.Path, want)
		}
		if st, err := os.Stat(f.Path); err != nil || st.Size() > 2500 {
			t.Fatalf("rotated file %s: %v %v", f.Path, st.Size(), err)
		}
	}
	// The first event of the second file chains to the last of the first.
	first, second := readLines(t, files[0].Path), readLines(t, files[1].Path)
	a, _ := splitLine(bytes.TrimSuffix(first[len(first)-1], []byte("\n")))
	b, _ := splitLine(bytes.TrimSuffix(second[0], []byte("\n")))
	if b.prev != a.hash {
		t.Fatalf("chain broken across rotation: %s vs %s", b.prev, a.hash)
	}
	res, err := Verify(path)
	if err != nil || res.Events != 30 || res.Files != len(files) {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
}

// TestTornTailRepaired: a crash in the middle of a write leaves part of a
// line; opening the log cuts it off and the chain goes on.
func TestTornTailRepaired(t *testing.T) {
	path := writeLog(t, 5, 0)
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"eventVersion":"1.08","eventID":"half-writ`)
	f.Close()
	if _, err := Verify(path); err == nil || !strings.Contains(err.Error(), "line 6: incomplete") {
		t.Fatalf("Verify of a torn log: %v", err)
	}
	var logs bytes.Buffer
	s, err := OpenFile(path, FileOptions{Logger: newTextLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "incomplete last line") {
		t.Fatalf("the repair was not logged: %q", logs.String())
	}
	if err := s.Emit(context.Background(), testEvent(6)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if res, err := Verify(path); err != nil || res.Events != 6 {
		t.Fatalf("after repair: %+v %v", res, err)
	}
}

// TestTwoWriters: two sinks on one log (iamdb serve and a management
// command) interleave without breaking the chain, also across rotations.
func TestTwoWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	a, err := OpenFile(path, FileOptions{MaxSize: 4000})
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenFile(path, FileOptions{MaxSize: 4000})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, s := range []*FileSink{a, b} {
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 25 {
					ctx := context.Background()
					if i%3 == 0 {
						ctx = Deferred(ctx)
					}
					if err := s.Emit(ctx, testEvent(g*100+i)); err != nil {
						t.Error(err)
					}
				}
			}()
		}
	}
	wg.Wait()
	a.Close()
	b.Close()
	res, err := Verify(path)
	if err != nil || res.Events != 200 || res.Files < 2 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	// The head names the end of the log, whichever writer wrote last: a
	// writer that skips reading the head must not leave an older one.
	hf, err := os.Open(path + headSuffix)
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	h, ok, err := readHead(hf)
	files, lerr := listFiles(path)
	st, serr := os.Stat(path)
	if err != nil || lerr != nil || serr != nil || !ok {
		t.Fatalf("head %v %v, files %v, stat %v", ok, err, lerr, serr)
	}
	if last := files[len(files)-1].Seq; h.Seq != last || h.Offset != st.Size() {
		t.Fatalf("head = file %d offset %d; want file %d offset %d", h.Seq, h.Offset, last, st.Size())
	}
}

// TestWriteHeadShorter: a head shorter than the one it replaces leaves
// no tail of the old one behind, whether or not the old length is known.
func TestWriteHeadShorter(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "head"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	long := head{Seq: 12, Offset: 1234567890, Hash: strings.Repeat("a", 64)}
	short := head{Seq: 1, Offset: 5, Hash: strings.Repeat("b", 64)}
	for _, prevLen := range []int{-1, 0} {
		n, err := writeHead(f, long, -1)
		if err != nil {
			t.Fatal(err)
		}
		if prevLen == 0 {
			prevLen = n
		}
		if _, err := writeHead(f, short, prevLen); err != nil {
			t.Fatal(err)
		}
		if h, ok, err := readHead(f); err != nil || !ok || h != short {
			t.Fatalf("prevLen %d: head = %+v, %v, %v; want %+v", prevLen, h, ok, err, short)
		}
	}
}

// TestDeferredEventsAreSynced: deferred events reach the disk and the head
// within the fsync interval without anyone waiting.
func TestDeferredEventsAreSynced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, err := OpenFile(path, FileOptions{FsyncInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 3 {
		if err := s.Emit(Deferred(context.Background()), testEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	for range 500 {
		hf, _ := os.Open(path + headSuffix)
		h, ok, _ := readHead(hf)
		hf.Close()
		st, _ := os.Stat(path)
		if ok && st != nil && h.Offset == st.Size() && st.Size() > 0 && bytes.Count(mustRead(t, path), []byte("\n")) == 3 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("deferred events were not synced and recorded in the head")
}

func mustRead(t testing.TB, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFailClosed: a log that cannot be written makes Emit fail (fail
// closed) or only counts (fail open).
func TestFailClosed(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	for _, closed := range []bool{true, false} {
		t.Run(fmt.Sprint("fail_closed=", closed), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "audit.jsonl")
			if err := os.Symlink("/dev/full", path); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			s, err := OpenFile(path, FileOptions{FailClosed: closed, Logger: newTextLogger(&logs)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			err = s.Emit(context.Background(), testEvent(1))
			if closed && err == nil {
				t.Fatal("Emit succeeded on a full disk with fail_closed")
			}
			if !closed && err != nil {
				t.Fatalf("fail open: Emit = %v", err)
			}
			if s.WriteErrors() != 1 || s.Err() == nil {
				t.Fatalf("write errors %d, Err %v", s.WriteErrors(), s.Err())
			}
			if !strings.Contains(logs.String(), "cannot record events") {
				t.Fatalf("no error log: %q", logs.String())
			}
		})
	}
}

func TestFilter(t *testing.T) {
	e := &Event{EventName: "connect", EventTime: "2026-01-02T03:04:05.000Z", ErrorCode: "AccessDenied",
		UserIdentity: &UserIdentity{Type: "AssumedRole", ARN: "arn:aws:sts::1:assumed-role/r/s", SessionContext: &SessionContext{
			SessionIssuer: &SessionIssuer{ARN: "arn:aws:iam::1:role/r", UserName: "r"}, WebIDFederationData: &WebIDFederationData{Attributes: map[string]string{"sub": "alice"}}}},
		RequestParameters: map[string]any{"dbUser": "app", "instance": "orders"}}
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	for _, tc := range []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true},
		{Filter{Event: "CONNECT", Failed: true}, true},
		{Filter{Event: "disconnect"}, false},
		{Filter{Principal: "arn:aws:iam::1:role/r"}, true},
		{Filter{Principal: "arn:aws:sts::1:assumed-role/r/s"}, true},
		{Filter{Principal: "arn:aws:iam::1:user/x"}, false},
		{Filter{User: "alice"}, true},
		{Filter{User: "bob"}, false},
		{Filter{DBUser: "app", Instance: "orders"}, true},
		{Filter{DBUser: "report"}, false},
		{Filter{Since: at("2026-01-02T03:00:00Z"), Until: at("2026-01-02T04:00:00Z")}, true},
		{Filter{Since: at("2026-01-02T03:05:00Z")}, false},
	} {
		if got := tc.f.Match(e); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.f, got, tc.want)
		}
	}
}

func TestRedactStatement(t *testing.T) {
	for in, want := range map[string]string{
		`ALTER ROLE app PASSWORD 'hunter2'`:                    `ALTER ROLE app PASSWORD '***'`,
		`create user x with password 'it''s secret' login`:     `create user x with password '***' login`,
		`ALTER USER 'u'@'%' IDENTIFIED BY 'pw'`:                `ALTER USER 'u'@'%' IDENTIFIED BY '***'`,
		`SET PASSWORD = 'pw'`:                                  `SET PASSWORD = '***'`,
		`SELECT password_hash FROM users WHERE name = 'alice'`: `SELECT password_hash FROM users WHERE name = 'alice'`,
		`SELECT 1`: `SELECT 1`,
	} {
		if got := RedactStatement(in); got != want {
			t.Errorf("RedactStatement(%q) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkFileSink(b *testing.B) {
	for _, mode := range []string{"sync", "deferred"} {
		b.Run(mode, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "audit.jsonl")
			s, err := OpenFile(path, FileOptions{})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if mode == "deferred" {
				ctx = Deferred(ctx)
			}
			b.SetParallelism(16) // many sessions logging in at once
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if err := s.Emit(ctx, testEvent(i)); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			s.Close()
		})
	}
}
