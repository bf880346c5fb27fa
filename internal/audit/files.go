package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Files of one log, for path audit.jsonl:
//
//	audit.jsonl.1, audit.jsonl.2, …   rotated, oldest first, never written again
//	audit.jsonl                        the current file
//	audit.jsonl.head                   lock, and the last durable position
//
// Rotated files are numbered in the order they were made (higher is
// newer), so rotating renames one file and never renumbers the others.
// The current file has the number the next rotation will give it, which
// is how the head names a position that survives that rename.

// headSuffix names the head file next to the log.
const headSuffix = ".head"

// logFile is one file of a log.
type logFile struct {
	Path string
	Seq  int // position in the log, 1 = oldest
}

// listFiles returns the log's files, oldest first; the current file is
// last (included even when it does not exist yet).
func listFiles(path string) ([]logFile, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listing audit files in %s: %w", dir, err)
	}
	var seqs []int
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, base+".") {
			continue
		}
		n, err := strconv.Atoi(name[len(base)+1:])
		if err != nil || n <= 0 || strconv.Itoa(n) != name[len(base)+1:] {
			continue
		}
		seqs = append(seqs, n)
	}
	slices.Sort(seqs)
	out := make([]logFile, 0, len(seqs)+1)
	for _, n := range seqs {
		out = append(out, logFile{Path: filepath.Join(dir, base+"."+strconv.Itoa(n)), Seq: n})
	}
	cur := 1
	if len(seqs) > 0 {
		cur = seqs[len(seqs)-1] + 1
	}
	return append(out, logFile{Path: path, Seq: cur}), nil
}

// head is the last durable position of the log: the line ending at byte
// Offset of file Seq has hash Hash. Writers advance it after every fsync,
// so a log that ends before it has lost events from its end.
type head struct {
	Seq    int    `json:"file"`
	Offset int64  `json:"offset"`
	Hash   string `json:"hash"`
}

func (h head) after(o head) bool {
	return h.Seq > o.Seq || h.Seq == o.Seq && h.Offset > o.Offset
}

func readHead(f *os.File) (head, bool, error) {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<16))
	if err != nil {
		return head{}, false, fmt.Errorf("reading the audit head: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return head{}, false, nil
	}
	var h head
	if err := json.Unmarshal(b, &h); err != nil {
		return head{}, false, fmt.Errorf("the audit head %s is damaged: %w", f.Name(), err)
	}
	return h, true, nil
}

// writeHead replaces the head file's content with h and returns its
// length. prevLen is the length of what the file holds when the caller
// knows it (-1 when not): a head at least as long overwrites it whole, so
// the file needs no truncating.
func writeHead(f *os.File, h head, prevLen int) (int, error) {
	b, _ := json.Marshal(h)
	b = append(b, '\n')
	if _, err := f.WriteAt(b, 0); err != nil {
		return 0, fmt.Errorf("writing the audit head: %w", err)
	}
	if prevLen < 0 || len(b) < prevLen {
		if err := f.Truncate(int64(len(b))); err != nil {
			return 0, fmt.Errorf("writing the audit head: %w", err)
		}
	}
	return len(b), nil
}

// flock takes or releases the log's inter-process lock: `iamdb serve` and
// management commands append to the same log.
func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// lastLine returns the last complete line among the first size bytes of
// f (without its newline) and, when the data does not end in a newline,
// where the incomplete (torn) line that follows it starts (-1 otherwise).
func lastLine(f *os.File, size int64) (line []byte, tornAt int64, err error) {
	tornAt = -1
	if size == 0 {
		return nil, tornAt, nil
	}
	window := int64(64 << 10)
	for {
		start := max(size-window, 0)
		buf := make([]byte, size-start)
		if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
			return nil, -1, fmt.Errorf("reading %s: %w", f.Name(), err)
		}
		end := len(buf) // the complete data is buf[:end]
		if buf[end-1] != '\n' {
			i := bytes.LastIndexByte(buf, '\n')
			if i < 0 && start > 0 {
				window *= 2
				continue
			}
			end = i + 1
			tornAt = start + int64(end)
		}
		if end == 0 {
			return nil, tornAt, nil
		}
		j := bytes.LastIndexByte(buf[:end-1], '\n')
		if j < 0 && start > 0 {
			window *= 2
			tornAt = -1
			continue
		}
		return buf[j+1 : end-1], tornAt, nil
	}
}

// lastHash is the hash the next event appended to file f (of size bytes)
// chains to: that of its last line, or when it is empty that of the
// newest rotated file's last line, or GenesisHash for a new log.
func lastHash(f *os.File, size int64, rotated []logFile) (string, error) {
	if size > 0 {
		line, _, err := lastLine(f, size)
		if err != nil {
			return "", err
		}
		p, err := splitLine(line)
		if err != nil {
			return "", fmt.Errorf("%s: last line: %w", f.Name(), err)
		}
		return p.hash, nil
	}
	for i := len(rotated) - 1; i >= 0; i-- {
		rf, err := os.Open(rotated[i].Path)
		if err != nil {
			return "", fmt.Errorf("opening %s: %w", rotated[i].Path, err)
		}
		st, err := rf.Stat()
		if err != nil || st.Size() == 0 {
			rf.Close()
			continue
		}
		h, err := lastHash(rf, st.Size(), nil)
		rf.Close()
		return h, err
	}
	return GenesisHash, nil
}

// syncDir makes a rename or a new file in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ResolveFile is the audit log's path: configured (audit.file) unless it
// is the default for configDataDir (data_dir/audit.jsonl), in which case
// audit.jsonl in dataDir, the data directory actually in use — so that
// --data-dir moves the log along with the rest of the data.
func ResolveFile(configured, configDataDir, dataDir string) string {
	if configured == "" || dataDir != "" && configured == filepath.Join(configDataDir, "audit.jsonl") {
		return filepath.Join(dataDir, "audit.jsonl")
	}
	return configured
}

// datasync flushes f's data and the metadata needed to read it back (its
// size) to stable storage: fdatasync(2), which skips the timestamps an
// fsync would also write. That is all an append-only log needs, and it
// costs less per group commit.
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if !errors.Is(serr, syscall.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
