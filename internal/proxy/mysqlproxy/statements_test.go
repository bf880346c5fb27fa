package mysqlproxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/iamdb/iamdb/internal/audit"
)

// conversation builds both directions of a session, step by step, with
// the sequence numbers each side would use.
type conversation struct {
	caps  uint64
	steps []step
}

type step struct {
	client bool
	data   []byte
}

// command adds a client command (split into packets of at most 16 MiB).
func (c *conversation) command(payload []byte) byte {
	var b []byte
	seq := byte(0)
	for {
		n := min(len(payload), maxPacketPayload)
		b = append(b, packet(seq, payload[:n])...)
		seq++
		payload = payload[n:]
		if n < maxPacketPayload {
			break
		}
	}
	c.steps = append(c.steps, step{client: true, data: b})
	return seq
}

// answer adds the server's packets, numbered from seq.
func (c *conversation) answer(seq byte, payloads ...[]byte) byte {
	var b []byte
	for _, p := range payloads {
		b = append(b, packet(seq, p)...)
		seq++
	}
	c.steps = append(c.steps, step{data: b})
	return seq
}

func (c *conversation) deprecateEOF() bool { return c.caps&capDeprecateEOF != 0 }

func okPacket(status uint16) []byte {
	return []byte{pktOK, 0, 0, byte(status), byte(status >> 8), 0, 0}
}

// terminator ends rows: an OK packet with the 0xfe header, or EOF.
func (c *conversation) terminator(status uint16) []byte {
	if c.deprecateEOF() {
		return []byte{pktEOF, 0, 0, byte(status), byte(status >> 8), 0, 0}
	}
	return []byte{pktEOF, 0, 0, byte(status), byte(status >> 8)}
}

func columnDef(name string) []byte {
	var b []byte
	for _, s := range []string{"def", "", "", "", name, name} {
		b = appendLenenc(b, uint64(len(s)))
		b = append(b, s...)
	}
	return append(b, 0x0c, 0x21, 0, 0xff, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0)
}

// resultSet is a result set's packets: columns, rows, terminator.
func (c *conversation) resultSet(binaryProto bool, status uint16, cols []string, rows ...[]byte) [][]byte {
	return c.resultSetMeta(binaryProto, true, status, cols, rows...)
}

// resultSetMeta is resultSet where MariaDB may leave out the column
// definitions of a prepared statement's result, which the client has.
func (c *conversation) resultSetMeta(binaryProto, meta bool, status uint16, cols []string, rows ...[]byte) [][]byte {
	count := appendLenenc(nil, uint64(len(cols)))
	if binaryProto && c.caps&capMariaDBCacheMetadata != 0 {
		if !meta {
			count = append(count, 0)
		} else {
			count = append(count, 1)
		}
	} else {
		meta = true
	}
	out := [][]byte{count}
	for _, name := range cols {
		if meta {
			out = append(out, columnDef(name))
		}
	}
	if !c.deprecateEOF() {
		out = append(out, []byte{pktEOF, 0, 0, 2, 0})
	}
	out = append(out, rows...)
	return append(out, c.terminator(status))
}

func (c *conversation) prepareOK(id uint32, params, cols int) [][]byte {
	p := []byte{pktOK}
	p = binary.LittleEndian.AppendUint32(p, id)
	p = binary.LittleEndian.AppendUint16(p, uint16(cols))
	p = binary.LittleEndian.AppendUint16(p, uint16(params))
	p = append(p, 0, 0, 0)
	out := [][]byte{p}
	for _, n := range []int{params, cols} {
		for range n {
			out = append(out, columnDef("?"))
		}
		if n > 0 && !c.deprecateEOF() {
			out = append(out, []byte{pktEOF, 0, 0, 2, 0})
		}
	}
	return out
}

func execute(id uint32, bound bool, nulls byte, types []byte, values ...[]byte) []byte {
	p := []byte{comStmtExecute}
	p = binary.LittleEndian.AppendUint32(p, id)
	p = append(p, 0, 1, 0, 0, 0, nulls)
	if bound {
		p = append(p, 1)
		p = append(p, types...)
	} else {
		p = append(p, 0)
	}
	for _, v := range values {
		p = append(p, v...)
	}
	return p
}

func lenencString(s string) []byte { return append(appendLenenc(nil, uint64(len(s))), s...) }

// scripted is a session with every kind of command statement audit
// follows, and the answers a server gives.
func scripted(caps uint64) (*conversation, []string) {
	c := &conversation{caps: caps}
	q := func(s string) []byte { return append([]byte{comQuery}, s...) }
	var want []string
	st := func(text, protocol, name string, params ...any) {
		want = append(want, fmt.Sprintf("%s|%s|%s|%v", text, protocol, name, params))
	}

	seq := c.command(q("SELECT 1"))
	c.answer(seq, c.resultSet(false, 2, []string{"1"}, lenencString("1"))...)
	st("SELECT 1", "query", "")

	seq = c.command(append([]byte{comStmtPrepare}, "SELECT ?, ?"...))
	c.answer(seq, c.prepareOK(7, 2, 2)...)

	i64 := binary.LittleEndian.AppendUint64(nil, 42)
	seq = c.command(execute(7, true, 0b10, []byte{typeLongLong, 0, typeVarString, 0}, i64))
	c.answer(seq, c.resultSet(true, 2, []string{"a", "b"}, []byte{0, 0b1000, 42, 0, 0, 0, 0, 0, 0, 0})...)
	st("SELECT ?, ?", "execute", "7", "42", "<nil>")

	seq = c.command(execute(7, false, 0, nil, binary.LittleEndian.AppendUint64(nil, 0xffffffffffffffd5), lenencString("x")))
	c.answer(seq, c.resultSetMeta(true, false, 2, []string{"a", "b"}, []byte{0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 'x'})...)
	st("SELECT ?, ?", "execute", "7", "-43", "x")

	long := append([]byte{comStmtSendLongData}, 7, 0, 0, 0, 1, 0)
	c.command(append(long, "long "...))
	c.command(append(long, "value"...))
	seq = c.command(execute(7, false, 0, nil, binary.LittleEndian.AppendUint64(nil, 1)))
	c.answer(seq, c.resultSet(true, 2, []string{"a", "b"})...)
	st("SELECT ?, ?", "execute", "7", "1", "long value")
	// Long data counts for one execution only.
	seq = c.command(execute(7, false, 0, nil, binary.LittleEndian.AppendUint64(nil, 2), lenencString("short")))
	c.answer(seq, c.resultSetMeta(true, false, 2, []string{"a", "b"})...)
	st("SELECT ?, ?", "execute", "7", "2", "short")

	// LOAD DATA LOCAL INFILE: 300 file packets whose sequence numbers wrap;
	// the one numbered 0 starts with COM_QUERY's code.
	seq = c.command(q("LOAD DATA LOCAL INFILE 'f' INTO TABLE t"))
	seq = c.answer(seq, append([]byte{pktLocalInfile}, 'f'))
	var file []byte
	for range 300 {
		file = append(file, packet(seq, []byte("\x03SELECT 'not a statement'"))...)
		seq++
	}
	file = append(file, packet(seq, nil)...)
	c.steps = append(c.steps, step{client: true, data: file})
	c.answer(seq+1, okPacket(2))
	st("LOAD DATA LOCAL INFILE 'f' INTO TABLE t", "query", "")

	// Two result sets and the procedure's final OK; then an error.
	seq = c.command(q("CALL p()"))
	answer := c.resultSet(false, 2|statusMoreResults, []string{"x"}, lenencString("1"))
	answer = append(answer, c.resultSet(false, 2|statusMoreResults, []string{"y"}, lenencString("2"), lenencString("3"))...)
	c.answer(seq, append(answer, okPacket(2))...)
	st("CALL p()", "query", "")
	seq = c.command(q("SELECT nothing"))
	c.answer(seq, []byte("\xff\x16\x04#42S22Unknown column"))
	st("SELECT nothing", "query", "")

	// A statement closed, then executed: known by id only.
	c.command([]byte{comStmtClose, 7, 0, 0, 0})
	seq = c.command(execute(7, false, 0, nil))
	c.answer(seq, []byte("\xff\x13\x02#HY000Unknown prepared statement handler"))
	st("", "execute", "7")

	// A statement of more than 16 MiB: two packets.
	big := "SELECT '" + strings.Repeat("x", maxPacketPayload) + "'"
	seq = c.command(q(big))
	c.answer(seq, okPacket(2))
	st(big[:audit.MaxStatementText], "query", "")

	// MariaDB's "the statement prepared last", sent with its prepare.
	prep := append([]byte{comStmtPrepare}, "SELECT 2"...)
	c.steps = append(c.steps, step{client: true, data: append(packet(0, prep), packet(0, execute(lastPrepared, false, 0, nil))...)})
	c.answer(1, c.prepareOK(8, 0, 1)...)
	c.answer(1, c.resultSet(true, 2, []string{"2"}, []byte{0, 0, 2, 0, 0, 0})...)
	st("SELECT 2", "execute", "4294967295")

	seq = c.command([]byte{0x0e}) // COM_PING
	c.answer(seq, okPacket(2))
	seq = c.command(q("BEGIN"))
	c.answer(seq, okPacket(2|statusInTrans))
	st("BEGIN", "query", "")
	seq = c.command(q("COMMIT"))
	c.answer(seq, okPacket(2))
	st("COMMIT", "query", "")
	return c, want
}

func describe(s audit.Statement) string {
	var ps []any
	for _, p := range s.Parameters {
		if p.Null {
			ps = append(ps, nil)
			continue
		}
		ps = append(ps, string(p.Value))
	}
	text := s.Text
	if len(text) > audit.MaxStatementText {
		text = text[:audit.MaxStatementText]
	}
	return fmt.Sprintf("%s|%s|%s|%v", text, s.Protocol, s.Name, ps)
}

// play feeds the conversation to a walker, tap and tracker in chunks of
// the given size, each direction in order, and returns what the tap
// emitted and whether the tracker ended idle.
func play(t *testing.T, c *conversation, chunk int) ([]string, bool) {
	t.Helper()
	var got []string
	tap := newStmtTap(c.caps, true, func(s audit.Statement) { got = append(got, describe(s)) })
	tr := newRespTracker(c.caps)
	tr.onPrepared = tap.learn
	tr.onLost = func(reason string) { t.Errorf("tracker lost: %s", reason) }
	w := &clientWalker{tap: tap, track: tr}
	for _, s := range c.steps {
		if s.client {
			var out bytes.Buffer
			if _, err := copyClientToUpstream(&out, &chunkReader{b: s.data, n: chunk}, w); err != io.EOF {
				t.Fatalf("client stream: %v", err)
			}
			if !bytes.Equal(out.Bytes(), s.data) {
				t.Fatal("the client's bytes were altered")
			}
			continue
		}
		for i := 0; i < len(s.data); i += chunk {
			tr.feed(s.data[i:min(i+chunk, len(s.data))])
		}
	}
	return got, tr.idle()
}

// chunkReader returns at most n bytes a read.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[n:]
	return n, nil
}

// TestStatementTap runs a scripted session under every framing the
// capabilities allow, in chunks of many sizes, and checks the statements
// recorded and that the tracker followed every answer.
func TestStatementTap(t *testing.T) {
	for _, caps := range []struct {
		name string
		caps uint64
	}{
		{"EOF packets", capProtocol41},
		{"CLIENT_DEPRECATE_EOF", capProtocol41 | capDeprecateEOF},
		{"MariaDB metadata cache", capProtocol41 | capDeprecateEOF | capMariaDBCacheMetadata},
	} {
		t.Run(caps.name, func(t *testing.T) {
			c, want := scripted(caps.caps)
			for _, chunk := range []int{1, 3, 7, 64, 1 << 20} {
				if chunk < 64 && testing.Short() {
					continue
				}
				got, idle := play(t, c, chunk)
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("chunks of %d:\n%s\nwant\n%s", chunk, shorten(got), shorten(want))
				}
				if !idle {
					t.Fatalf("chunks of %d: the tracker is not idle at the end", chunk)
				}
			}
		})
	}
}

func shorten(ss []string) string {
	var out []string
	for _, s := range ss {
		if len(s) > 100 {
			s = s[:100] + "…"
		}
		out = append(out, s)
	}
	return strings.Join(out, "\n")
}

// TestTrackerIdle: a transaction left open, an answer not yet complete or
// a client command not yet answered makes a session not reusable.
func TestTrackerIdle(t *testing.T) {
	c := &conversation{caps: capProtocol41 | capDeprecateEOF}
	tr := newRespTracker(c.caps)
	if !tr.idle() {
		t.Fatal("a new session is not idle")
	}
	tr.expect(comQuery, 0, "")
	if tr.idle() {
		t.Fatal("idle with a command unanswered")
	}
	answer := c.resultSet(false, 2, []string{"x"}, lenencString("1"))
	var b []byte
	for i, p := range answer {
		b = append(b, packet(byte(i+1), p)...)
	}
	tr.feed(b[:len(b)-3])
	if tr.idle() {
		t.Fatal("idle with an answer half delivered")
	}
	tr.feed(b[len(b)-3:])
	if !tr.idle() {
		t.Fatal("not idle after the answer")
	}
	tr.expect(comQuery, 0, "")
	tr.feed(packet(1, okPacket(2|statusInTrans)))
	if tr.idle() {
		t.Fatal("idle inside a transaction")
	}
	tr.feed(packet(0, okPacket(2)))
	if tr.idle() || !tr.lost {
		t.Fatal("a packet that answers nothing went unnoticed")
	}
}

// TestBinaryValues: parameter values as the audit log shows them.
func TestBinaryValues(t *testing.T) {
	le16 := func(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
	le32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	le64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	for _, tc := range []struct {
		typ      byte
		unsigned bool
		in       []byte
		want     string
	}{
		{typeTiny, false, []byte{0xff}, "-1"},
		{typeTiny, true, []byte{0xff}, "255"},
		{typeShort, false, le16(0xfffe), "-2"},
		{typeYear, false, le16(2026), "2026"},
		{typeLong, true, le32(4000000000), "4000000000"},
		{typeLongLong, false, le64(1 << 40), "1099511627776"},
		{typeFloat, false, le32(0x3fc00000), "1.5"},
		{typeDouble, false, le64(0x400921fb54442d18), "3.141592653589793"},
		{typeDateTime, false, []byte{11, 0xea, 0x07, 11, 22, 1, 2, 3, 0x40, 0xe2, 0x01, 0}, "2026-11-22 01:02:03.123456"},
		{typeDate, false, []byte{4, 0xea, 0x07, 11, 22}, "2026-11-22"},
		{typeTime, false, []byte{8, 1, 1, 0, 0, 0, 2, 3, 4}, "-26:03:04"},
		{typeNewDecimal, false, lenencString("12.50"), "12.50"},
		{typeBlob, false, lenencString("bytes"), "bytes"},
	} {
		p, ok := binaryValue(tc.typ, tc.unsigned, &reader{b: tc.in})
		if !ok || string(p.Value) != tc.want {
			t.Errorf("type %#x %x: %q %v, want %q", tc.typ, tc.in, p.Value, ok, tc.want)
		}
	}
	if _, ok := binaryValue(0x42, false, &reader{b: []byte{1}}); ok {
		t.Error("an unknown type decoded")
	}
	if _, ok := binaryValue(typeLongLong, false, &reader{b: []byte{1}}); ok {
		t.Error("a short value decoded")
	}
}

// FuzzStatementTap: any client stream and any upstream stream, cut
// anywhere, yield the same statements and tracker state as whole, and
// never panic; the client's bytes are forwarded unchanged up to a
// COM_CHANGE_USER.
func FuzzStatementTap(f *testing.F) {
	c, _ := scripted(capProtocol41 | capDeprecateEOF)
	var client, server []byte
	// Small steps only: a short seed keeps the fuzzer fast.
	for _, s := range c.steps {
		switch {
		case len(s.data) > 512:
		case s.client:
			client = append(client, s.data...)
		default:
			server = append(server, s.data...)
		}
	}
	f.Add(client, server, uint8(3), uint64(capProtocol41|capDeprecateEOF))
	f.Add(packet(0, []byte("\x16SELECT ?")), packet(1, []byte("\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00")), uint8(1), uint64(capProtocol41))
	f.Add(packet(0, execute(lastPrepared, true, 0, []byte{typeVarString, 0}, lenencString("v"))), []byte{}, uint8(2), uint64(capQueryAttributes))
	f.Add(packet(0, []byte("\x03\x01\x01\x00\x01\xfd\x00\x01a\x01bSELECT 1")), []byte{}, uint8(5), uint64(capQueryAttributes))
	f.Fuzz(func(t *testing.T, client, server []byte, chunk uint8, caps uint64) {
		run := func(step int) string {
			var got []string
			tap := newStmtTap(caps, true, func(s audit.Statement) { got = append(got, describe(s)) })
			tr := newRespTracker(caps)
			tr.onPrepared = tap.learn
			w := &clientWalker{tap: tap, track: tr}
			var out bytes.Buffer
			_, err := copyClientToUpstream(&out, &chunkReader{b: client, n: step}, w)
			if err == nil || (err != io.EOF && err != errChangeUser && !strings.Contains(err.Error(), "unexpected EOF")) {
				t.Fatalf("copy: %v", err)
			}
			if !bytes.HasPrefix(client, out.Bytes()) || (err == io.EOF && out.Len() != len(client)) {
				t.Fatal("the client's bytes were altered")
			}
			for i := 0; i < len(server); i += step {
				tr.feed(server[i:min(i+step, len(server))])
			}
			return fmt.Sprintf("%q %v %v", got, tr.idle(), tr.lost)
		}
		if a, b := run(len(client)+len(server)+1), run(int(chunk%16)+1); a != b {
			t.Fatalf("whole streams %s, in chunks of %d %s", a, chunk%16+1, b)
		}
	})
}
