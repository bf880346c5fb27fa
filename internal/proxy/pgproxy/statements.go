package pgproxy

import (
	"bytes"
	"encoding/binary"

	"github.com/iamdb/iamdb/internal/audit"
)

// Statement audit reads the client→upstream byte stream as the relay
// copies it, without changing or delaying it: a tap is fed every chunk
// before the chunk is forwarded and reassembles message frames across
// chunk boundaries (type byte, int32 length, body). It keeps only the
// bodies of the messages it needs:
//
//	Q  Query                simple protocol: one event per message
//	P  Parse                remembers prepared statement name → text
//	B  Bind                 remembers portal → statement (+ parameters)
//	E  Execute              extended protocol: one event per execution
//	C  Close                forgets a statement or portal
//
// Everything else (CopyData, Sync, Describe …) is skipped by length. A
// frame that cannot be valid stops the tap for the rest of the session
// (logged once) rather than guess; the relay is never affected.

const (
	// maxTapMessage bounds what is kept of one message body; the rest is
	// skipped (statement text is cut to audit.MaxStatementText anyway).
	maxTapMessage = 256 << 10
	// maxPrepared bounds remembered statements and portals per session.
	maxPrepared = 4096
)

type portal struct {
	stmt   string
	params []audit.Parameter
}

type stmtTap struct {
	emit   func(audit.Statement)
	params bool // keep bound parameter values
	broken func(reason string)

	hdr       [5]byte
	hdrN      int
	typ       byte
	remaining int
	keep      bool
	body      []byte
	stopped   bool

	prepared map[string]string
	portals  map[string]portal
}

func newStmtTap(params bool, emit func(audit.Statement), broken func(string)) *stmtTap {
	return &stmtTap{emit: emit, params: params, broken: broken, prepared: map[string]string{}, portals: map[string]portal{}}
}

// feed consumes a chunk of the client's stream.
func (t *stmtTap) feed(p []byte) {
	for len(p) > 0 && !t.stopped {
		if t.hdrN < len(t.hdr) {
			n := copy(t.hdr[t.hdrN:], p)
			t.hdrN += n
			p = p[n:]
			if t.hdrN < len(t.hdr) {
				return
			}
			length := int(int32(binary.BigEndian.Uint32(t.hdr[1:])))
			if length < 4 {
				t.stop("a message with an invalid length")
				return
			}
			t.typ, t.remaining = t.hdr[0], length-4
			t.keep = bytes.IndexByte([]byte("QPBEC"), t.typ) >= 0
			t.body = t.body[:0]
		}
		n := min(t.remaining, len(p))
		if t.keep && len(t.body) < maxTapMessage {
			t.body = append(t.body, p[:min(n, maxTapMessage-len(t.body))]...)
		}
		t.remaining -= n
		p = p[n:]
		if t.remaining == 0 {
			if t.keep {
				t.message(t.typ, t.body)
			}
			t.hdrN = 0
			if cap(t.body) > 64<<10 {
				t.body = nil // do not hold a large buffer for the session's life
			}
		}
	}
}

func (t *stmtTap) stop(reason string) {
	t.stopped = true
	if t.broken != nil {
		t.broken(reason)
	}
}

func (t *stmtTap) message(typ byte, b []byte) {
	r := reader{b: b}
	switch typ {
	case 'Q':
		t.emit(audit.Statement{Text: r.cstring(), Protocol: "simple"})
	case 'P':
		name, text := r.cstring(), r.cstring()
		if len(t.prepared) >= maxPrepared {
			clear(t.prepared)
		}
		t.prepared[name] = text
	case 'B':
		name, stmt := r.cstring(), r.cstring()
		var params []audit.Parameter
		if t.params {
			params = r.bindParams()
		}
		if len(t.portals) >= maxPrepared {
			clear(t.portals)
		}
		t.portals[name] = portal{stmt: stmt, params: params}
	case 'E':
		name := r.cstring()
		pt, ok := t.portals[name]
		st := audit.Statement{Protocol: "extended", Name: pt.stmt, Parameters: pt.params}
		if ok {
			st.Text = t.prepared[pt.stmt]
		}
		t.emit(st)
	case 'C':
		kind, name := r.byte(), r.cstring()
		switch kind {
		case 'S':
			delete(t.prepared, name)
		case 'P':
			delete(t.portals, name)
		}
	}
}

// reader decodes message fields; past the end it yields zero values (a
// body cut to maxTapMessage simply ends early).
type reader struct{ b []byte }

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) cstring() string {
	i := bytes.IndexByte(r.b, 0)
	if i < 0 {
		s := string(r.b)
		r.b = nil
		return s
	}
	s := string(r.b[:i])
	r.b = r.b[i+1:]
	return s
}

func (r *reader) int16() (int, bool) {
	if len(r.b) < 2 {
		return 0, false
	}
	v := int(int16(binary.BigEndian.Uint16(r.b)))
	r.b = r.b[2:]
	return v, true
}

// bindParams decodes Bind's parameter formats and values.
func (r *reader) bindParams() []audit.Parameter {
	nf, ok := r.int16()
	if !ok || nf < 0 || len(r.b) < 2*nf {
		return nil
	}
	formats := make([]int, nf)
	for i := range formats {
		formats[i], _ = r.int16()
	}
	np, ok := r.int16()
	if !ok || np < 0 {
		return nil
	}
	out := make([]audit.Parameter, 0, min(np, audit.MaxParams))
	for i := 0; i < np && i < audit.MaxParams; i++ {
		if len(r.b) < 4 {
			break
		}
		n := int(int32(binary.BigEndian.Uint32(r.b)))
		r.b = r.b[4:]
		binaryFmt := nf == 1 && formats[0] == 1 || nf > 1 && i < nf && formats[i] == 1
		if n < 0 {
			out = append(out, audit.Parameter{Null: true})
			continue
		}
		v := r.b[:min(n, len(r.b))]
		r.b = r.b[len(v):]
		out = append(out, audit.Parameter{Value: bytes.Clone(v[:min(len(v), audit.MaxParamValue+1)]), Binary: binaryFmt})
	}
	return out
}
