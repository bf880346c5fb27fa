package mysqlproxy

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"sync"

	"github.com/iamdb/iamdb/internal/audit"
)

// Statement audit reads the client's commands as the relay forwards them
// (see clientWalker), without changing or delaying them:
//
//	COM_QUERY                 one event: the text (protocol "query")
//	COM_STMT_PREPARE          remembers the text until the upstream's
//	                          answer gives it an id (respTracker)
//	COM_STMT_EXECUTE          one event: the prepared text, the id as the
//	                          prepared statement's name, and with
//	                          audit_parameters the bound values
//	COM_STMT_BULK_EXECUTE     (MariaDB) one event, without values
//	COM_STMT_SEND_LONG_DATA   a parameter's value sent ahead of the execution
//	COM_STMT_CLOSE, COM_STMT_RESET, COM_RESET_CONNECTION forget state
//
// MariaDB's statement id 0xffffffff ("the statement prepared last", which
// lets a client send the prepare and the execution together) is resolved
// to the text of the last COM_STMT_PREPARE.

const (
	// maxTapCommand bounds what is kept of one command; the rest is
	// skipped (statement text is cut to audit.MaxStatementText anyway).
	maxTapCommand = 256 << 10
	// maxPrepared bounds remembered statements per session.
	maxPrepared = 4096
	// lastPrepared is MariaDB's statement id for the statement prepared
	// last on the connection.
	lastPrepared = 0xffffffff
)

type preparedStmt struct {
	text   string
	params int    // -1: not known
	types  []byte // two bytes a parameter, as last bound
	long   map[int][]byte
}

type stmtTap struct {
	emit   func(audit.Statement)
	params bool // record bound parameter values
	caps   uint64

	mu       sync.Mutex // the response tracker adds statements from the other direction
	prepared map[uint32]*preparedStmt
	last     string // text of the last COM_STMT_PREPARE sent
	lastID   uint32 // id of the last statement the upstream prepared
}

func newStmtTap(caps uint64, params bool, emit func(audit.Statement)) *stmtTap {
	return &stmtTap{emit: emit, params: params, caps: caps, prepared: map[uint32]*preparedStmt{}}
}

// learn records the id the upstream gave a prepared statement.
func (t *stmtTap) learn(id uint32, text string, params int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.prepared) >= maxPrepared {
		clear(t.prepared)
	}
	t.prepared[id] = &preparedStmt{text: text, params: params}
	t.lastID = id
}

// command handles one whole client command (p starts with its code; it
// may be cut to maxTapCommand). For COM_STMT_PREPARE it returns the
// statement text, which travels with the expected answer to learn.
func (t *stmtTap) command(p []byte) (prepareText string) {
	if len(p) == 0 {
		return ""
	}
	r := &reader{b: p[1:]}
	switch p[0] {
	case comQuery:
		if t.caps&capQueryAttributes != 0 {
			t.skipQueryAttributes(r)
		}
		if r.err != nil {
			return ""
		}
		t.emit(audit.Statement{Text: string(r.b), Protocol: "query"})
	case comStmtPrepare:
		text := string(r.b)
		t.mu.Lock()
		t.last = text
		t.mu.Unlock()
		return text
	case comStmtExecute, comStmtBulkExecute:
		id := r.uint32("statement id")
		if r.err != nil {
			return ""
		}
		t.mu.Lock()
		ps, text := t.lookup(id)
		st := audit.Statement{Text: text, Protocol: "execute", Name: strconv.FormatUint(uint64(id), 10)}
		if ps != nil && p[0] == comStmtExecute && t.params {
			st.Parameters, st.HasParams = t.executeParams(ps, r)
		}
		if ps != nil {
			clear(ps.long) // the server forgets long data with each execution
		}
		t.mu.Unlock()
		t.emit(st)
	case comStmtSendLongData:
		id := r.uint32("statement id")
		param := int(r.uint16("parameter"))
		if r.err != nil || !t.params {
			return ""
		}
		t.mu.Lock()
		if ps := t.prepared[id]; ps != nil && param < audit.MaxParams {
			if ps.long == nil {
				ps.long = map[int][]byte{}
			}
			have := ps.long[param]
			ps.long[param] = append(have, r.b[:min(len(r.b), audit.MaxParamValue+1-min(len(have), audit.MaxParamValue+1))]...)
		}
		t.mu.Unlock()
	case comStmtClose:
		id := r.uint32("statement id")
		t.mu.Lock()
		delete(t.prepared, id)
		t.mu.Unlock()
	case comStmtReset:
		id := r.uint32("statement id")
		t.mu.Lock()
		if ps := t.prepared[id]; ps != nil {
			clear(ps.long)
		}
		t.mu.Unlock()
	case comResetConnection:
		t.mu.Lock()
		clear(t.prepared)
		t.last, t.lastID = "", 0
		t.mu.Unlock()
	}
	return ""
}

// lookup finds a prepared statement by id; the text is "" when the
// statement is unknown (the upstream's answer could not be followed).
func (t *stmtTap) lookup(id uint32) (*preparedStmt, string) {
	if id == lastPrepared {
		if ps := t.prepared[t.lastID]; ps != nil && ps.text == t.last {
			return ps, ps.text
		}
		return nil, t.last
	}
	if ps := t.prepared[id]; ps != nil {
		return ps, ps.text
	}
	return nil, ""
}

// Flags of COM_STMT_EXECUTE.
const executeParameterCountAvailable = 0x08

// executeParams decodes the bound values of COM_STMT_EXECUTE after the
// statement id: flags, iteration count, then for each parameter a NULL
// bit, its type (sent with the first execution, or when it changes) and
// its value in the binary protocol.
// https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_execute.html
func (t *stmtTap) executeParams(ps *preparedStmt, r *reader) ([]audit.Parameter, bool) {
	flags := r.byte1("flags")
	r.uint32("iteration count")
	n := ps.params
	named := false
	if t.caps&capQueryAttributes != 0 && flags&executeParameterCountAvailable != 0 {
		n = int(r.lenenc("parameter count"))
		named = true
	}
	if r.err != nil || n <= 0 || n > 1<<16 {
		return nil, false
	}
	nulls := r.bytes((n+7)/8, "null bitmap")
	if r.byte1("new parameters bound") == 1 {
		types := make([]byte, 0, 2*n)
		for range n {
			types = append(types, r.bytes(2, "parameter type")...)
			if named {
				r.lenencBytes("parameter name")
			}
		}
		if r.err != nil {
			return nil, true
		}
		ps.types = types
	}
	if r.err != nil || len(ps.types) != 2*n {
		return nil, true
	}
	if ps.params >= 0 && n > ps.params {
		n = ps.params // the rest are query attributes
	}
	out := make([]audit.Parameter, 0, min(n, audit.MaxParams))
	for i := 0; i < n && i < audit.MaxParams; i++ {
		if nulls[i/8]&(1<<(i%8)) != 0 {
			out = append(out, audit.Parameter{Null: true})
			continue
		}
		if v, ok := ps.long[i]; ok {
			out = append(out, audit.Parameter{Value: v})
			continue
		}
		p, ok := binaryValue(ps.types[2*i], ps.types[2*i+1]&0x80 != 0, r)
		if !ok {
			break // cut short (maxTapCommand) or a type iamdb does not know
		}
		out = append(out, p)
	}
	return out, true
}

// skipQueryAttributes moves r past the query attributes MySQL 8 clients
// put before a COM_QUERY's text when CLIENT_QUERY_ATTRIBUTES was agreed.
func (t *stmtTap) skipQueryAttributes(r *reader) {
	n := int(r.lenenc("parameter count"))
	r.lenenc("parameter set count")
	if r.err != nil || n == 0 {
		return
	}
	if n > 1<<16 {
		r.fail("parameter count")
		return
	}
	nulls := r.bytes((n+7)/8, "null bitmap")
	if r.byte1("new parameters bound") != 1 {
		return
	}
	types := make([]byte, 0, 2*n)
	for range n {
		types = append(types, r.bytes(2, "parameter type")...)
		r.lenencBytes("parameter name")
	}
	if r.err != nil {
		return
	}
	for i := range n {
		if nulls[i/8]&(1<<(i%8)) != 0 {
			continue
		}
		if _, ok := binaryValue(types[2*i], false, r); !ok {
			r.fail("query attribute")
			return
		}
	}
}

// Column types of the binary protocol.
// https://dev.mysql.com/doc/dev/mysql-server/latest/field__types_8h.html
const (
	typeDecimal    = 0x00
	typeTiny       = 0x01
	typeShort      = 0x02
	typeLong       = 0x03
	typeFloat      = 0x04
	typeDouble     = 0x05
	typeNull       = 0x06
	typeTimestamp  = 0x07
	typeLongLong   = 0x08
	typeInt24      = 0x09
	typeDate       = 0x0a
	typeTime       = 0x0b
	typeDateTime   = 0x0c
	typeYear       = 0x0d
	typeNewDate    = 0x0e
	typeVarchar    = 0x0f
	typeBit        = 0x10
	typeTimestamp2 = 0x11
	typeDateTime2  = 0x12
	typeTime2      = 0x13
	typeJSON       = 0xf5
	typeNewDecimal = 0xf6
	typeEnum       = 0xf7
	typeSet        = 0xf8
	typeTinyBlob   = 0xf9
	typeMediumBlob = 0xfa
	typeLongBlob   = 0xfb
	typeBlob       = 0xfc
	typeVarString  = 0xfd
	typeString     = 0xfe
	typeGeometry   = 0xff
)

// binaryValue decodes one parameter value of the binary protocol as the
// text a client would have written; false when r ends early or the type
// is unknown.
func binaryValue(typ byte, unsigned bool, r *reader) (audit.Parameter, bool) {
	text := func(s string) (audit.Parameter, bool) { return audit.Parameter{Value: []byte(s)}, r.err == nil }
	switch typ {
	case typeNull:
		return audit.Parameter{Null: true}, true
	case typeTiny:
		b := r.byte1("value")
		if unsigned {
			return text(strconv.FormatUint(uint64(b), 10))
		}
		return text(strconv.FormatInt(int64(int8(b)), 10))
	case typeShort, typeYear:
		v := r.uint16("value")
		if unsigned || typ == typeYear {
			return text(strconv.FormatUint(uint64(v), 10))
		}
		return text(strconv.FormatInt(int64(int16(v)), 10))
	case typeLong, typeInt24:
		v := r.uint32("value")
		if unsigned {
			return text(strconv.FormatUint(uint64(v), 10))
		}
		return text(strconv.FormatInt(int64(int32(v)), 10))
	case typeLongLong:
		b := r.bytes(8, "value")
		if b == nil {
			return audit.Parameter{}, false
		}
		v := binary.LittleEndian.Uint64(b)
		if unsigned {
			return text(strconv.FormatUint(v, 10))
		}
		return text(strconv.FormatInt(int64(v), 10))
	case typeFloat:
		v := r.uint32("value")
		return text(strconv.FormatFloat(float64(math.Float32frombits(v)), 'g', -1, 32))
	case typeDouble:
		b := r.bytes(8, "value")
		if b == nil {
			return audit.Parameter{}, false
		}
		return text(strconv.FormatFloat(math.Float64frombits(binary.LittleEndian.Uint64(b)), 'g', -1, 64))
	case typeDate, typeDateTime, typeTimestamp, typeNewDate, typeDateTime2, typeTimestamp2:
		b := r.bytes(int(r.byte1("length")), "value")
		if r.err != nil {
			return audit.Parameter{}, false
		}
		return text(formatDateTime(b))
	case typeTime, typeTime2:
		b := r.bytes(int(r.byte1("length")), "value")
		if r.err != nil {
			return audit.Parameter{}, false
		}
		return text(formatTime(b))
	case typeDecimal, typeNewDecimal, typeVarchar, typeBit, typeJSON, typeEnum, typeSet,
		typeTinyBlob, typeMediumBlob, typeLongBlob, typeBlob, typeVarString, typeString, typeGeometry:
		n := r.lenenc("value length")
		if r.err != nil {
			return audit.Parameter{}, false
		}
		// A value longer than what was kept of the command is cut: what
		// is there is enough for the event, which cuts it anyway.
		v := r.b[:min(uint64(len(r.b)), n)]
		r.b = r.b[len(v):]
		if uint64(len(v)) < n {
			r.fail("value")
		}
		return audit.Parameter{Value: append([]byte(nil), v[:min(len(v), audit.MaxParamValue+1)]...)}, true
	}
	return audit.Parameter{}, false
}

// formatDateTime renders a binary DATE, DATETIME or TIMESTAMP (0, 4, 7 or
// 11 bytes) as MySQL writes it.
func formatDateTime(b []byte) string {
	var year, month, day, hour, minute, second, micro int
	if len(b) >= 4 {
		year, month, day = int(binary.LittleEndian.Uint16(b)), int(b[2]), int(b[3])
	}
	if len(b) >= 7 {
		hour, minute, second = int(b[4]), int(b[5]), int(b[6])
	}
	if len(b) >= 11 {
		micro = int(binary.LittleEndian.Uint32(b[7:]))
	}
	s := fmt.Sprintf("%04d-%02d-%02d", year, month, day)
	if len(b) >= 7 {
		s += fmt.Sprintf(" %02d:%02d:%02d", hour, minute, second)
	}
	if micro != 0 {
		s += fmt.Sprintf(".%06d", micro)
	}
	return s
}

// formatTime renders a binary TIME (0, 8 or 12 bytes).
func formatTime(b []byte) string {
	if len(b) < 8 {
		return "00:00:00"
	}
	sign := ""
	if b[0] == 1 {
		sign = "-"
	}
	hours := int(binary.LittleEndian.Uint32(b[1:]))*24 + int(b[5])
	s := fmt.Sprintf("%s%02d:%02d:%02d", sign, hours, b[6], b[7])
	if len(b) >= 12 {
		if micro := binary.LittleEndian.Uint32(b[8:]); micro != 0 {
			s += fmt.Sprintf(".%06d", micro)
		}
	}
	return s
}
