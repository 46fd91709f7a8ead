package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	apiVersionsKey        = 18 // its response always uses response header v0
	controlledShutdownKey = 7  // v0 uses request header v0: no client id
)

// Reasons a frame is refused. The connection is closed for all of them except
// errUnsupportedVersion on ApiVersions (KIP-511).
var (
	errShortHeader        = errors.New("protocol: frame shorter than the request header")
	errUnknownKey         = errors.New("protocol: unsupported api key")
	errUnsupportedVersion = errors.New("protocol: unsupported api version")
	errMalformed          = errors.New("protocol: malformed request")
)

// parseError carries what could be read of the header of a refused request,
// for logging and for the KIP-511 answer (which needs the correlation id).
type parseError struct {
	Key, Version  int16
	CorrelationID int32
	Err           error
}

func (e *parseError) Error() string {
	return fmt.Sprintf("api key %d version %d correlation id %d: %v", e.Key, e.Version, e.CorrelationID, e.Err)
}

func (e *parseError) Unwrap() error { return e.Err }

// parseRequest decodes one frame (without its 4-byte size) into a Request, or
// returns a *parseError. It is a pure function of its inputs so that it can be
// fuzzed; it never panics on any input, provided kmsg does not.
//
// The decoded Body may alias frame (kmsg keeps byte fields such as Produce
// records as sub-slices), so the caller must not reuse frame afterwards.
// Trailing bytes after the body are ignored, as kmsg and Kafka do.
func parseRequest(frame []byte, versions func(int16) (VersionRange, bool)) (*Request, error) {
	if len(frame) < minFrameSize {
		return nil, &parseError{Err: errShortHeader}
	}
	r := kbin.Reader{Src: frame}
	key, version, corr := r.Int16(), r.Int16(), r.Int32()
	fail := func(err error) error {
		return &parseError{Key: key, Version: version, CorrelationID: corr, Err: err}
	}

	body := kmsg.RequestForKey(key)
	if body == nil {
		return nil, fail(errUnknownKey)
	}
	vr, ok := versions(key)
	if !ok {
		return nil, fail(errUnknownKey)
	}
	// The header shape depends on the version, so nothing past the
	// correlation id can be read for a version we do not know.
	if version < vr.Min || version > vr.Max || version < 0 || version > body.MaxVersion() {
		return nil, fail(errUnsupportedVersion)
	}
	body.SetVersion(version)

	var clientID string
	if key != controlledShutdownKey || version != 0 {
		if id := r.NullableString(); id != nil { // null is ""
			clientID = *id
		}
	}
	// Request header v2 (flexible versions) ends with tagged fields; none
	// are defined for requests that we act on, so they are skipped.
	if body.IsFlexible() {
		kmsg.SkipTags(&r)
	}
	if err := r.Complete(); err != nil {
		return nil, fail(fmt.Errorf("%w: header: %w", errMalformed, err))
	}
	if err := body.ReadFrom(r.Src); err != nil {
		return nil, fail(fmt.Errorf("%w: body: %w", errMalformed, err))
	}
	return &Request{
		Key:           key,
		Version:       version,
		CorrelationID: corr,
		ClientID:      clientID,
		Body:          body,
	}, nil
}

// appendResponse appends one response frame to dst: size, correlation id,
// response header tags when flexible, body. ApiVersions always gets response
// header v0 (no tags), because clients parse it before they know whether the
// broker speaks flexible versions. On error dst is returned unchanged.
func appendResponse(dst []byte, corr int32, resp kmsg.Response) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0) // size, filled in below
	dst = kbin.AppendInt32(dst, corr)
	if resp.IsFlexible() && resp.Key() != apiVersionsKey {
		dst = append(dst, 0) // response header v1: no tagged fields
	}
	dst = resp.AppendTo(dst)
	size := len(dst) - start - 4
	if size > math.MaxInt32 {
		return dst[:start], fmt.Errorf("protocol: response of %d bytes does not fit a frame", size)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(size))
	return dst, nil
}

// unsupportedVersionResponse is the KIP-511 answer to an ApiVersions request
// whose version the broker does not know: a v0 response with
// UNSUPPORTED_VERSION and every key the table supports (Kafka lists only
// ApiVersions; the full list is a superset that clients accept, and saves
// nothing to omit). Clients read the ApiVersions range from it and retry.
func unsupportedVersionResponse(versions func(int16) (VersionRange, bool)) *kmsg.ApiVersionsResponse {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	resp.ErrorCode = kerr.UnsupportedVersion.Code
	for k := int16(0); k <= kmsg.MaxKey; k++ {
		vr, ok := versions(k)
		if !ok {
			continue
		}
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = k, vr.Min, vr.Max
		resp.ApiKeys = append(resp.ApiKeys, ak)
	}
	return resp
}
