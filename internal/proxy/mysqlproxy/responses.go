package mysqlproxy

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// respTracker follows the upstream's answers well enough to know where
// each one ends, without holding any of it back: the relay feeds it every
// chunk before passing the chunk on. It serves two ends. Statement audit
// needs the id the upstream gives each prepared statement (only its
// COM_STMT_PREPARE response carries it), and reusing an upstream session
// needs to know that, when the client quits, every answer was delivered
// and no transaction is open (the server status of the last OK or EOF).
//
// MySQL answers commands in order, one answer per command that has one,
// so the client side of the relay queues each command (expect) before
// forwarding it, and the tracker takes the next one from the queue when
// an answer begins. An answer is an OK, ERR or EOF packet, or result sets
// (column count, definitions, rows, terminator; more follow while the
// status says SERVER_MORE_RESULTS_EXISTS), or a prepared statement's
// description. The framing depends on the capabilities both legs agreed on
// (CLIENT_DEPRECATE_EOF, optional and cached metadata), which is why they
// must be the same on both. Anything the tracker cannot follow (a stream
// it does not know, a sequence number out of order) makes it give up for
// the rest of the session: statement audit then names executed statements
// by id only, and the upstream session is not reused.
type respTracker struct {
	mu    sync.Mutex
	caps  uint64
	queue []expectation // queue[qhead:] are the commands whose answers have not begun
	qhead int

	// Framing across chunks.
	hdr     [4]byte
	hdrN    int
	left    int  // payload bytes of the current physical packet still to come
	cont    bool // the current logical packet continues in the next physical one
	head    [headLen]byte
	headN   int
	firstN  int  // length of the first physical packet of the logical one
	nextSeq byte // the sequence number the next packet must have
	anySeq  bool // the next packet's number is not known (after a LOCAL INFILE request)

	busy   bool // inside an answer
	cur    expectation
	phase  int
	count  uint64 // definitions left in this phase
	cols   uint64 // a prepared statement's column definitions, after its parameters
	status uint16 // server status of the last OK or EOF packet
	lost   bool

	// onPrepared learns the id of a prepared statement; onLost hears once
	// why the tracker gave up. Either may be nil.
	onPrepared func(id uint32, text string, params int)
	onLost     func(reason string)
}

// headLen is how much of each packet the tracker keeps: enough for an OK
// packet's status (header, two length-encoded integers, status) and a
// COM_STMT_PREPARE_OK.
const headLen = 32

// expectation is a command whose answer is still to come.
type expectation struct {
	cmd  byte
	seq  byte   // the sequence number of the answer's first packet
	text string // COM_STMT_PREPARE: the statement
}

// Answer phases.
const (
	phaseFirst           = iota // the first packet of a result
	phaseColumns                // column definitions
	phaseColumnsEOF             // the EOF after them
	phaseRows                   // rows until a terminator
	phaseParams                 // a prepared statement's parameter definitions
	phaseParamsEOF              // the EOF after them
	phasePreparedCols           // its column definitions
	phasePreparedColsEOF        // the EOF after them
)

// Server status flags.
const (
	statusInTrans         = 0x0001
	statusMoreResults     = 0x0008
	statusCursorExists    = 0x0040
	statusInTransReadOnly = 0x2000
)

func newRespTracker(caps uint64) *respTracker {
	return &respTracker{caps: caps}
}

// expect queues a command the client is about to send; seq is the number
// of its last packet.
func (t *respTracker) expect(cmd byte, lastSeq byte, text string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lost {
		return
	}
	switch cmd {
	case comBinlogDump, comBinlogDumpGTID:
		t.giveUp("a replication stream")
		return
	}
	t.queue = append(t.queue, expectation{cmd: cmd, seq: lastSeq + 1, text: text})
}

// idle reports whether every answer was delivered whole and no
// transaction is open: the state in which an upstream session can be
// reset and reused.
func (t *respTracker) idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.lost && !t.busy && t.qhead == len(t.queue) && t.hdrN == 0 && t.left == 0 && !t.cont &&
		t.status&(statusInTrans|statusInTransReadOnly) == 0
}

func (t *respTracker) giveUp(reason string) {
	if t.lost {
		return
	}
	t.lost = true
	t.queue, t.qhead = nil, 0
	if t.onLost != nil {
		t.onLost(reason)
	}
}

// feed follows a chunk of the upstream's stream.
func (t *respTracker) feed(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(p) > 0 && !t.lost {
		if t.left == 0 && t.hdrN < 4 {
			n := copy(t.hdr[t.hdrN:], p)
			t.hdrN += n
			p = p[n:]
			if t.hdrN < 4 {
				return
			}
			t.hdrN = 0
			length := int(t.hdr[0]) | int(t.hdr[1])<<8 | int(t.hdr[2])<<16
			if !t.header(length, t.hdr[3]) {
				return
			}
			if length == 0 {
				t.packetEnd()
			}
			continue
		}
		n := min(t.left, len(p))
		if t.headN < headLen {
			t.headN += copy(t.head[t.headN:], p[:n])
		}
		t.left -= n
		p = p[n:]
		if t.left == 0 {
			t.packetEnd()
		}
	}
}

// header starts a physical packet; false when the tracker gave up.
func (t *respTracker) header(length int, seq byte) bool {
	if !t.cont {
		if !t.busy {
			if t.qhead == len(t.queue) {
				t.giveUp("a packet from the upstream that answers no command")
				return false
			}
			t.cur = t.queue[t.qhead]
			if t.qhead++; t.qhead == len(t.queue) {
				t.queue, t.qhead = t.queue[:0], 0 // reuse the array: no allocation per command
			}
			t.busy, t.phase, t.nextSeq, t.anySeq = true, phaseFirst, t.cur.seq, false
		}
		t.headN, t.firstN = 0, length
	}
	if !t.anySeq && seq != t.nextSeq {
		t.giveUp(fmt.Sprintf("packet sequence number %d from the upstream, expected %d", seq, t.nextSeq))
		return false
	}
	t.anySeq = false
	t.nextSeq = seq + 1
	t.left = length
	t.cont = length == maxPacketPayload
	return true
}

func (t *respTracker) packetEnd() {
	if t.cont {
		return
	}
	t.packet(t.head[:min(t.headN, headLen)])
}

// answer kinds
const (
	answerSimple    = iota // one packet: OK, ERR, EOF or a string
	answerResults          // result sets (text)
	answerBinary           // result sets (binary protocol)
	answerRows             // rows until a terminator: COM_STMT_FETCH, COM_FIELD_LIST
	answerPrepare          // COM_STMT_PREPARE_OK and definitions
	answerLocalFile        // after a LOCAL INFILE request: the final OK or ERR (internal)
)

func answerKind(cmd byte) int {
	switch cmd {
	case comQuery, comProcessInfo:
		return answerResults
	case comStmtExecute, comStmtBulkExecute:
		return answerBinary
	case comStmtFetch, comFieldList:
		return answerRows
	case comStmtPrepare:
		return answerPrepare
	}
	return answerSimple
}

// packet handles one whole logical packet of an answer; h is its start.
func (t *respTracker) packet(h []byte) {
	if len(h) == 0 {
		t.giveUp("an empty packet from the upstream")
		return
	}
	// MariaDB's progress reports (an ERR packet with code 0xffff) may
	// come at any time during a long statement and are not its answer.
	if h[0] == pktERR && len(h) >= 3 && h[1] == 0xff && h[2] == 0xff {
		return
	}
	kind := answerKind(t.cur.cmd)
	switch t.phase {
	case phaseFirst:
		switch {
		case kind == answerSimple:
			if h[0] == pktOK || h[0] == pktEOF {
				t.terminator(h, t.firstN)
				return
			}
			t.done()
		case kind == answerRows:
			t.phase = phaseRows
			t.packet(h)
		case kind == answerPrepare:
			t.prepared(h)
		case h[0] == pktERR:
			t.done()
		case h[0] == pktOK:
			t.terminator(h, t.firstN)
		case h[0] == pktLocalInfile && kind == answerResults:
			// The client sends the file; the server's next packet (OK or
			// ERR) follows the file's last packet, whose number the
			// tracker does not see.
			t.anySeq = true
		default:
			r := &reader{b: h}
			n := r.lenenc("column count")
			meta := true
			if kind == answerBinary && t.caps&capMariaDBCacheMetadata != 0 || t.caps&capOptionalResultsetMetadata != 0 {
				meta = r.byte1("metadata follows") != 0
			}
			if r.err != nil {
				t.giveUp("a malformed column count from the upstream")
				return
			}
			if meta && n > 0 {
				t.count, t.phase = n, phaseColumns
				return
			}
			t.afterColumns()
		}
	case phaseColumns:
		if t.count--; t.count == 0 {
			t.afterColumns()
		}
	case phaseColumnsEOF:
		if h[0] != pktEOF {
			t.giveUp("no EOF after the column definitions")
			return
		}
		t.status = eofStatus(h)
		if kind == answerBinary && t.status&statusCursorExists != 0 {
			t.done() // the rows come with COM_STMT_FETCH
			return
		}
		t.phase = phaseRows
	case phaseRows:
		switch {
		case h[0] == pktEOF && t.firstN < maxPacketPayload:
			t.terminator(h, t.firstN)
		case h[0] == pktERR:
			t.done()
		}
	case phaseParams:
		if t.count--; t.count == 0 {
			t.afterParams()
		}
	case phaseParamsEOF:
		t.preparedColumns()
	case phasePreparedCols:
		if t.count--; t.count == 0 {
			t.afterPreparedColumns()
		}
	case phasePreparedColsEOF:
		t.done()
	}
}

func (t *respTracker) afterColumns() {
	if t.caps&capDeprecateEOF == 0 {
		t.phase = phaseColumnsEOF
		return
	}
	t.phase = phaseRows
}

// terminator ends a result with an OK packet, or EOF without
// CLIENT_DEPRECATE_EOF: more results may follow.
func (t *respTracker) terminator(h []byte, length int) {
	if h[0] == pktEOF && (t.caps&capDeprecateEOF == 0 || length < 7) {
		t.status = eofStatus(h)
	} else {
		t.status = okStatus(h)
	}
	kind := answerKind(t.cur.cmd)
	switch {
	case kind == answerBinary && t.status&statusCursorExists != 0 && t.phase != phaseRows:
		t.done()
	case t.status&statusMoreResults != 0 && (kind == answerResults || kind == answerBinary):
		t.phase = phaseFirst
	default:
		t.done()
	}
}

// prepared reads COM_STMT_PREPARE_OK (or ERR).
func (t *respTracker) prepared(h []byte) {
	if h[0] != pktOK {
		t.done()
		return
	}
	if len(h) < 9 {
		t.giveUp("a short COM_STMT_PREPARE_OK")
		return
	}
	id := binary.LittleEndian.Uint32(h[1:])
	cols := uint64(binary.LittleEndian.Uint16(h[5:]))
	params := uint64(binary.LittleEndian.Uint16(h[7:]))
	if t.onPrepared != nil {
		t.onPrepared(id, t.cur.text, int(params))
	}
	if t.caps&capOptionalResultsetMetadata != 0 && len(h) >= 13 && h[12] == 0 {
		t.done() // no definitions follow
		return
	}
	t.cols = cols
	if params > 0 {
		t.count, t.phase = params, phaseParams
		return
	}
	t.preparedColumns()
}

func (t *respTracker) afterParams() {
	if t.caps&capDeprecateEOF == 0 {
		t.phase = phaseParamsEOF
		return
	}
	t.preparedColumns()
}

func (t *respTracker) preparedColumns() {
	if t.cols > 0 {
		t.count, t.phase = t.cols, phasePreparedCols
		return
	}
	t.done()
}

func (t *respTracker) afterPreparedColumns() {
	if t.caps&capDeprecateEOF == 0 {
		t.phase = phasePreparedColsEOF
		return
	}
	t.done()
}

func (t *respTracker) done() {
	t.busy = false
	t.cur = expectation{}
}

// okStatus is the server status of an OK packet (header 0x00 or 0xfe):
// after the affected rows and the last insert id.
func okStatus(h []byte) uint16 {
	r := &reader{b: h[1:]}
	r.lenenc("affected rows")
	r.lenenc("last insert id")
	return r.uint16("status")
}

// eofStatus is the server status of an EOF packet.
func eofStatus(h []byte) uint16 {
	if len(h) < 5 {
		return 0
	}
	return binary.LittleEndian.Uint16(h[3:])
}
