package pgproxy

import "encoding/binary"

// After the login both directions of a session are a sequence of typed
// messages (type byte, int32 length including itself, body). The relay
// follows their boundaries as the bytes pass — reading headers only,
// skipping bodies by length, copying nothing — so that when the client
// quits it knows whether the upstream session is idle at a message
// boundary and can serve another client (see pool.go).

// frameHeader reassembles a message header that may be split across
// reads and counts down the body that follows it.
type frameHeader struct {
	hdr       [5]byte
	hdrN      int
	remaining int  // body bytes of the current message still to come
	lost      bool // a length that cannot be: the boundaries are unknown from here on
}

// atBoundary reports whether the stream so far ends between two messages.
func (f *frameHeader) atBoundary() bool { return !f.lost && f.hdrN == 0 && f.remaining == 0 }

// next consumes p from its start up to the end of the current header or
// body. It returns how many bytes it consumed and, when a header was
// completed by them, its type (else 0).
func (f *frameHeader) next(p []byte) (n int, typ byte) {
	if f.remaining > 0 {
		n = min(f.remaining, len(p))
		f.remaining -= n
		return n, 0
	}
	n = copy(f.hdr[f.hdrN:], p)
	f.hdrN += n
	if f.hdrN < len(f.hdr) {
		return n, 0
	}
	f.hdrN = 0
	length := int(int32(binary.BigEndian.Uint32(f.hdr[1:])))
	if length < 4 {
		f.lost = true
		return n, 0
	}
	f.remaining = length - 4
	return n, f.hdr[0]
}

// clientFrames follows the client→upstream stream.
type clientFrames struct {
	frameHeader
	// requests counts the messages the upstream answers with exactly one
	// ReadyForQuery: Query, Sync and FunctionCall.
	requests int64
	// unsynced: extended-protocol messages were sent after the last Sync,
	// so the upstream may hold unsent results or an implicit transaction.
	unsynced bool
	// terminated: the client sent Terminate.
	terminated bool
}

// feed follows chunk. When a Terminate message ends in it, feed returns
// the length of chunk up to and including the Terminate (bytes after it
// are meaningless: the protocol ends there) and whether the Terminate lies
// wholly in chunk, so that it can still be held back.
func (f *clientFrames) feed(chunk []byte) (upTo int, terminate, whole bool) {
	for i := 0; i < len(chunk); {
		if f.lost {
			return len(chunk), false, false
		}
		split := f.hdrN > 0
		n, typ := f.next(chunk[i:])
		i += n
		switch typ {
		case 'Q', 'F':
			f.requests++
		case 'S':
			f.requests++
			f.unsynced = false
		case 'P', 'B', 'D', 'E', 'C', 'H':
			f.unsynced = true
		case 'X':
			f.terminated = true
			return i, true, !split && f.remaining == 0
		}
	}
	return len(chunk), false, false
}

// upstreamFrames follows the upstream→client stream.
type upstreamFrames struct {
	frameHeader
	// ready counts ReadyForQuery messages; status is the transaction
	// status of the last one ('I' idle, 'T' in a transaction, 'E' failed).
	ready      int64
	status     byte
	wantStatus bool
}

func (f *upstreamFrames) feed(chunk []byte) {
	for i := 0; i < len(chunk) && !f.lost; {
		if f.wantStatus && f.remaining > 0 {
			f.status, f.wantStatus = chunk[i], false
		}
		n, typ := f.next(chunk[i:])
		i += n
		if typ == 'Z' {
			f.ready++
			f.status, f.wantStatus = 0, f.remaining == 1
		}
	}
}

// idleAfter reports whether, with the client's stream c, the session is
// idle: every request answered, no transaction open, nothing half sent in
// either direction.
func (f *upstreamFrames) idleAfter(c *clientFrames) bool {
	return f.atBoundary() && f.status == 'I' && f.ready == c.requests && !c.unsynced && c.atBoundary()
}
