package client

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Format renders records as text, the way kcat's -f does. Directives:
//
//	%t topic   %p partition   %o offset   %T timestamp (Unix ms)
//	%k key     %s value       %K key length   %S value length
//	%h headers as k=v,k=v     %% a percent sign
//
// and the escapes \n \t \r \\. A null key or value renders as nothing.
type Format struct{ parts []formatPart }

type formatPart struct {
	lit  string // when verb is 0
	verb byte
}

// ParseFormat compiles a format string; an unknown directive or escape
// is an error.
func ParseFormat(s string) (*Format, error) {
	f := &Format{}
	var lit []byte
	flush := func() {
		if len(lit) > 0 {
			f.parts = append(f.parts, formatPart{lit: string(lit)})
			lit = nil
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '%', '\\':
			if i+1 == len(s) {
				return nil, fmt.Errorf("format %q: a lone %c at the end", s, c)
			}
			i++
			n := s[i]
			if c == '\\' {
				switch n {
				case 'n':
					lit = append(lit, '\n')
				case 't':
					lit = append(lit, '\t')
				case 'r':
					lit = append(lit, '\r')
				case '\\':
					lit = append(lit, '\\')
				default:
					return nil, fmt.Errorf(`format %q: unknown escape \%c (want \n \t \r \\)`, s, n)
				}
				continue
			}
			switch n {
			case '%':
				lit = append(lit, '%')
			case 't', 'p', 'o', 'T', 'k', 's', 'K', 'S', 'h':
				flush()
				f.parts = append(f.parts, formatPart{verb: n})
			default:
				return nil, fmt.Errorf("format %q: unknown directive %%%c (want %%t %%p %%o %%T %%k %%s %%K %%S %%h %%%%)", s, n)
			}
		default:
			lit = append(lit, c)
		}
	}
	flush()
	return f, nil
}

// Append renders r after dst.
func (f *Format) Append(dst []byte, r *kgo.Record) []byte {
	for _, p := range f.parts {
		switch p.verb {
		case 0:
			dst = append(dst, p.lit...)
		case 't':
			dst = append(dst, r.Topic...)
		case 'p':
			dst = strconv.AppendInt(dst, int64(r.Partition), 10)
		case 'o':
			dst = strconv.AppendInt(dst, r.Offset, 10)
		case 'T':
			dst = strconv.AppendInt(dst, r.Timestamp.UnixMilli(), 10)
		case 'k':
			dst = append(dst, r.Key...)
		case 's':
			dst = append(dst, r.Value...)
		case 'K':
			dst = strconv.AppendInt(dst, int64(len(r.Key)), 10)
		case 'S':
			dst = strconv.AppendInt(dst, int64(len(r.Value)), 10)
		case 'h':
			for i, h := range r.Headers {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, h.Key...)
				dst = append(dst, '=')
				dst = append(dst, h.Value...)
			}
		}
	}
	return dst
}

// JSONRecord is a record as one JSON object. Keys and values are strings
// (bytes that are not UTF-8 come out as U+FFFD); a null key or value is
// null; headers keep their order and duplicates.
type JSONRecord struct {
	Topic     string       `json:"topic"`
	Partition int32        `json:"partition"`
	Offset    int64        `json:"offset"`
	Timestamp int64        `json:"timestamp"` // Unix ms
	Key       *string      `json:"key"`
	Value     *string      `json:"value"`
	Headers   []JSONHeader `json:"headers"`
}

// JSONHeader is one record header.
type JSONHeader struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// NewJSONRecord converts r.
func NewJSONRecord(r *kgo.Record) JSONRecord {
	j := JSONRecord{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Timestamp: r.Timestamp.UnixMilli(),
		Key:       nullable(r.Key),
		Value:     nullable(r.Value),
		Headers:   make([]JSONHeader, 0, len(r.Headers)),
	}
	for _, h := range r.Headers {
		j.Headers = append(j.Headers, JSONHeader{Key: h.Key, Value: string(h.Value)})
	}
	return j
}

// AppendJSON renders r as one line of JSON (with its newline) after dst.
func AppendJSON(dst []byte, r *kgo.Record) ([]byte, error) {
	b, err := json.Marshal(NewJSONRecord(r))
	if err != nil {
		return dst, err
	}
	return append(append(dst, b...), '\n'), nil
}

func nullable(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}
