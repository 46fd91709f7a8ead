package snapstore

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
)

// reader is what Store.Open returns: it yields exactly size bytes and
// checks them. For a data file it computes the CRC-32C as bytes go by and,
// if it does not match the meta, fails the read that would deliver the last
// bytes: an FSM that reads exactly Size bytes and never sees io.EOF (as
// io.ReadFull allows) still gets the error, so a damaged snapshot is never
// installed silently. For a reference it checks the Source's stream is
// neither shorter nor longer than recorded.
//
// Like any io.Reader it is for one goroutine; Close may come from another
// and more than once.
type reader struct {
	s     *Store
	id    string
	r     io.Reader
	size  int64
	n     int64       // bytes delivered
	crc   hash.Hash32 // nil for references
	want  uint32
	err   error // sticky: the end, or the failure
	close func() error
	once  sync.Once
}

func (s *Store) newReader(id string, r io.Reader, closeFn func() error, size int64, crc hash.Hash32, want uint32) *reader {
	return &reader{s: s, id: id, r: r, size: size, crc: crc, want: want, close: closeFn}
}

// Read implements io.Reader.
func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.n == r.size { // only an empty snapshot gets here before its check
		if err := r.verifyEnd(); err != nil {
			r.err = err
			return 0, err
		}
		r.err = io.EOF
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if rest := r.size - r.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	k, err := r.r.Read(p)
	r.n += int64(k)
	if r.crc != nil {
		r.crc.Write(p[:k])
	}
	switch {
	case r.n == r.size:
		// The last bytes: check before handing them out, and withhold
		// them if the check fails.
		if verr := r.verifyEnd(); verr != nil {
			r.err = verr
			return 0, verr
		}
		r.err = io.EOF // the next Read ends the stream
		return k, nil
	case errors.Is(err, io.EOF):
		r.err = fmt.Errorf("%w: %s: data ends after %d of %d bytes", ErrCorrupt, r.id, r.n, r.size)
		return k, r.err
	case err != nil:
		r.err = fmt.Errorf("snapstore: read snapshot %s: %w", r.id, err)
		return k, r.err
	}
	return k, nil
}

// verifyEnd checks a fully read stream: the CRC of a data file, or that a
// reference's stream has nothing past its recorded size.
func (r *reader) verifyEnd() error {
	if r.crc != nil {
		if got := r.crc.Sum32(); got != r.want {
			r.s.logger.Error("snapshot data fails its checksum", "id", r.id, "crc32c", got, "recorded", r.want)
			return fmt.Errorf("%w: %s: data crc32c %08x, meta records %08x", ErrCorrupt, r.id, got, r.want)
		}
		return nil
	}
	var one [1]byte
	switch _, err := io.ReadFull(r.r, one[:]); {
	case err == nil:
		return fmt.Errorf("%w: %s: referenced data is longer than its recorded %d bytes", ErrCorrupt, r.id, r.size)
	case errors.Is(err, io.EOF):
		return nil
	default:
		return fmt.Errorf("snapstore: read snapshot %s: %w", r.id, err)
	}
}

// Close implements io.Closer: it closes the file or the Source's stream and
// lets the store reap the snapshot again. Later calls return nil.
func (r *reader) Close() error {
	var err error
	r.once.Do(func() {
		err = r.close()
		r.s.release(r.id)
		if err != nil {
			err = fmt.Errorf("snapstore: close snapshot %s: %w", r.id, err)
		}
	})
	return err
}
