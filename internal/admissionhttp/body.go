package admissionhttp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
)

// MaxBodySize is controller-runtime's limit, for the same reason: a review holds at most two
// objects of at most 3 MiB each (etcd takes 1.5 MiB, JSON may double it), plus less than 1 MiB
// for the rest. A body of this size or more is refused, as there.
const MaxBodySize = 7 << 20

// ErrEmpty refuses a body without a byte.
var ErrEmpty = errors.New("request body is empty")

// ErrTooLarge refuses a body of MaxBodySize bytes or more.
var ErrTooLarge = fmt.Errorf("request entity is too large; limit is %d bytes", MaxBodySize)

// preallocCap bounds the buffer allocated on the word of Content-Length: a client announcing
// 7 MiB and sending nothing must not cost 7 MiB per connection. A pod's review is a few KiB;
// a larger one grows its buffer as its bytes arrive.
const preallocCap = 64 << 10

// bodies recycles the buffers bodies are read into and answers written from: the body was a
// third of the bytes a warm admission allocates, and so of its garbage collection. Nothing
// decoded from a body refers to it (strings and raw objects are copies), so its buffer is
// reused once the answer is written. One grown past preallocCap by a large pod is left to the
// collector instead.
var bodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBody() *bytes.Buffer { return bodies.Get().(*bytes.Buffer) }

func putBody(buf *bytes.Buffer) {
	if buf.Cap() <= preallocCap+bytes.MinRead {
		buf.Reset()
		bodies.Put(buf)
	}
}

// ReadBody reads body into buf (empty) up to MaxBodySize, for a typical pod in one go, sized
// from length, the Content-Length or -1 (io.ReadAll would grow and copy its buffer a few times).
func ReadBody(buf *bytes.Buffer, body io.Reader, length int64) ([]byte, error) {
	if length > 0 {
		buf.Grow(int(min(length, preallocCap)) + bytes.MinRead)
	}
	n, err := buf.ReadFrom(io.LimitReader(body, MaxBodySize))
	if err != nil {
		return nil, fmt.Errorf("reading the request body: %w", err)
	}
	if n >= MaxBodySize {
		return nil, ErrTooLarge
	}
	if n == 0 {
		return nil, ErrEmpty
	}
	return buf.Bytes(), nil
}
