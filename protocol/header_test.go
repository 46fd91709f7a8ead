package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// allVersions serves every key kmsg knows at every version it knows, so that
// parsing is exercised across all decoders.
func allVersions(k int16) (VersionRange, bool) {
	req := kmsg.RequestForKey(k)
	if req == nil {
		return VersionRange{}, false
	}
	return VersionRange{0, req.MaxVersion()}, true
}

// encodeRequest is a frame without its size prefix, as parseRequest takes it.
// ControlledShutdown v0 (request header v0, no client id) is built by hand:
// kmsg's formatter writes only its header.
func encodeRequest(req kmsg.Request, v int16, corr int32, clientID *string) []byte {
	req.SetVersion(v)
	if req.Key() == controlledShutdownKey && v == 0 {
		b := binary.BigEndian.AppendUint16(nil, controlledShutdownKey)
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint32(b, uint32(corr))
		return req.AppendTo(b)
	}
	var f *kmsg.RequestFormatter
	if clientID != nil {
		f = kmsg.NewRequestFormatter(kmsg.FormatterClientID(*clientID))
	} else {
		f = kmsg.NewRequestFormatter()
	}
	return f.AppendRequest(nil, req, corr)[4:]
}

func TestParseRequest(t *testing.T) {
	id := "client-1"
	heartbeatV4 := encodeRequest(heartbeat("g"), 4, 5, &id)
	// The same request with one unknown tag in header v2's tag section:
	// count 1, tag 9, length 2, two bytes.
	headerTagged := append([]byte(nil), heartbeatV4[:8+2+len(id)]...)
	headerTagged = append(headerTagged, 1, 9, 2, 0xaa, 0xbb)
	headerTagged = append(headerTagged, heartbeatV4[8+2+len(id)+1:]...)

	for _, tc := range []struct {
		name     string
		frame    []byte
		key, ver int16
		clientID string
		err      error
	}{
		{"metadata_v1_header_v1", encodeRequest(metadataReq(), 1, 5, &id), 3, 1, id, nil},
		{"metadata_v12_header_v2", encodeRequest(metadataReq(), 12, 5, &id), 3, 12, id, nil},
		{"null_client_id", encodeRequest(metadataReq(), 12, 5, nil), 3, 12, "", nil},
		{"header_v2_with_tags", headerTagged, 12, 4, id, nil},
		{"controlled_shutdown_v0_header_v0", encodeRequest(kmsg.NewPtrControlledShutdownRequest(), 0, 5, &id), 7, 0, "", nil},
		{"controlled_shutdown_v1_header_v1", encodeRequest(kmsg.NewPtrControlledShutdownRequest(), 1, 5, &id), 7, 1, id, nil},
		{"trailing_bytes_ignored", append(encodeRequest(metadataReq(), 1, 5, &id), 1, 2, 3), 3, 1, id, nil},
		{"short", []byte{0, 3, 0, 1, 0, 0, 0}, 0, 0, "", errShortHeader},
		{"no_client_id", encodeRequest(kmsg.NewPtrFetchRequest(), 4, 5, &id)[:8], 1, 4, "", errMalformed},
		{"unknown_key", rawHeader(1000, 0)[4:], 1000, 0, "", errUnknownKey},
		{"negative_key", rawHeader(-1, 0)[4:], -1, 0, "", errUnknownKey},
		{"version_above_kmsg", encodeRequest(metadataReq(), 99, 5, &id), 3, 99, "", errUnsupportedVersion},
		{"negative_version", encodeRequest(metadataReq(), -1, 5, &id), 3, -1, "", errUnsupportedVersion},
		{"truncated_client_id", encodeRequest(metadataReq(), 1, 5, &id)[:12], 3, 1, "", errMalformed},
		{"truncated_body", encodeRequest(heartbeat("group"), 0, 5, &id)[:8+2+len(id)+3], 12, 0, "", errMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := parseRequest(tc.frame, allVersions)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("error %v, want %v", err, tc.err)
				}
				var pe *parseError
				if tc.err != errShortHeader && (!errors.As(err, &pe) || pe.Key != tc.key || pe.Version != tc.ver || pe.CorrelationID != 5) {
					t.Fatalf("parse error %#v lacks the header", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.Key != tc.key || req.Version != tc.ver || req.CorrelationID != 5 || req.ClientID != tc.clientID {
				t.Fatalf("got key %d v%d corr %d client %q", req.Key, req.Version, req.CorrelationID, req.ClientID)
			}
			if req.Body.Key() != tc.key || req.Body.GetVersion() != tc.ver {
				t.Fatalf("body key %d v%d", req.Body.Key(), req.Body.GetVersion())
			}
		})
	}
}

func TestParseRequestVersionTable(t *testing.T) {
	frame := encodeRequest(kmsg.NewPtrFetchRequest(), 3, 5, nil)
	if _, err := parseRequest(frame, testVersions); !errors.Is(err, errUnsupportedVersion) {
		t.Fatalf("fetch v3 against floor 4: %v", err)
	}
	frame = encodeRequest(kmsg.NewPtrDescribeClusterRequest(), 0, 5, nil)
	if _, err := parseRequest(frame, testVersions); !errors.Is(err, errUnknownKey) {
		t.Fatalf("key outside the table: %v", err)
	}
}

func TestParseRequestDecodesBody(t *testing.T) {
	req := heartbeat("group-a")
	req.Generation, req.MemberID = 7, "m-1"
	for v := int16(0); v <= 4; v++ {
		got, err := parseRequest(encodeRequest(req, v, 1, nil), testVersions)
		if err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		hb := got.Body.(*kmsg.HeartbeatRequest)
		if hb.Group != "group-a" || hb.Generation != 7 || hb.MemberID != "m-1" {
			t.Fatalf("v%d: decoded %+v", v, hb)
		}
	}
}

func TestAppendResponse(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp kmsg.Response
		v    int16
		tags bool
	}{
		{"metadata_v8_header_v0", kmsg.NewPtrMetadataResponse(), 8, false},
		{"metadata_v9_header_v1", kmsg.NewPtrMetadataResponse(), 9, true},
		{"api_versions_v2_header_v0", kmsg.NewPtrApiVersionsResponse(), 2, false},
		{"api_versions_v3_header_v0", kmsg.NewPtrApiVersionsResponse(), 3, false},
		{"api_versions_v4_header_v0", kmsg.NewPtrApiVersionsResponse(), 4, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.resp.SetVersion(tc.v)
			prefix := []byte("keep")
			b, err := appendResponse(prefix, 42, tc.resp)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b[:4], prefix) {
				t.Fatalf("prefix overwritten: %q", b[:4])
			}
			frame := b[4:]
			if size := binary.BigEndian.Uint32(frame); int(size) != len(frame)-4 {
				t.Fatalf("size %d, frame %d", size, len(frame)-4)
			}
			if corr := binary.BigEndian.Uint32(frame[4:]); corr != 42 {
				t.Fatalf("correlation id %d", corr)
			}
			body := tc.resp.AppendTo(nil)
			want := 8 + len(body)
			if tc.tags {
				want++
				if frame[8] != 0 {
					t.Fatalf("tag section byte %d", frame[8])
				}
			}
			if len(frame) != want || !bytes.HasSuffix(frame, body) {
				t.Fatalf("frame %d bytes, want %d ending in the body", len(frame), want)
			}
		})
	}
}

func TestUnsupportedVersionResponse(t *testing.T) {
	resp := unsupportedVersionResponse(testVersions)
	b, err := appendResponse(nil, 9, resp)
	if err != nil {
		t.Fatal(err)
	}
	got := kmsg.NewPtrApiVersionsResponse() // v0
	if err := got.ReadFrom(b[8:]); err != nil {
		t.Fatal(err)
	}
	if got.ErrorCode != 35 || len(got.ApiKeys) != len(testTable) {
		t.Fatalf("error %d, %d keys", got.ErrorCode, len(got.ApiKeys))
	}
}

// FuzzParseRequest: parseRequest never panics, and whatever it accepts is
// consistent and re-encodes to something it accepts again.
func FuzzParseRequest(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzParseRequest.
	f.Add(encodeRequest(metadataReq(), 12, 1, nil))
	f.Fuzz(func(t *testing.T, frame []byte) {
		req, err := parseRequest(frame, allVersions)
		if err != nil {
			var pe *parseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *parseError", err)
			}
			return
		}
		if req.Body == nil || req.Body.Key() != req.Key || req.Body.GetVersion() != req.Version {
			t.Fatalf("inconsistent request: key %d v%d body %T", req.Key, req.Version, req.Body)
		}
		again := encodeRequest(req.Body, req.Version, req.CorrelationID, &req.ClientID)
		if _, err := parseRequest(again, allVersions); err != nil {
			t.Fatalf("re-encoded key %d v%d does not parse: %v", req.Key, req.Version, err)
		}
	})
}
