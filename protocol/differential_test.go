package protocol

import (
	"errors"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawBody is a request whose body is given as bytes, so that kmsg's
// formatter writes the header (from the embedded request's key, version and
// flexibility) around a body the fuzzer chose.
type rawBody struct {
	kmsg.Request
	body []byte
}

func (r rawBody) AppendTo(dst []byte) []byte { return append(dst, r.body...) }

// FuzzDecodeDifferential holds the broker's decoding path against kmsg's
// own, for every key and version kmsg knows (the broker serves a subset;
// allVersions admits them all). The fuzzer picks a key, a version, a client
// id and body bytes; kmsg's RequestFormatter frames them with a request
// header, and
//
//   - parseRequest accepts the frame exactly when kmsg alone decodes the
//     body at that version, refusing it as malformed otherwise;
//   - what it accepts carries the key, version, correlation id and client
//     id the formatter wrote, and a body deeply equal to kmsg's own decode;
//   - that body, encoded by kmsg and parsed again, is the same request (a
//     fixed point), so what the broker acts on is what a client encoding it
//     would have meant.
//
// FuzzParseRequest fuzzes whole frames, header included; this one holds the
// header right and fuzzes what each decoder does with the body.
func FuzzDecodeDifferential(f *testing.F) {
	// Seeds: every key and version with its default body. More, with
	// populated bodies, live in testdata/fuzz/FuzzDecodeDifferential.
	for k := int16(0); k <= kmsg.MaxKey; k++ {
		req := kmsg.RequestForKey(k)
		if req == nil {
			continue
		}
		for v := int16(0); v <= req.MaxVersion(); v++ {
			req.SetVersion(v)
			f.Add(k, v, "seed", false, req.AppendTo(nil))
		}
	}
	f.Fuzz(func(t *testing.T, key, version int16, clientID string, nullID bool, body []byte) {
		proto := kmsg.RequestForKey(key)
		if proto == nil || version < 0 || version > proto.MaxVersion() {
			return
		}
		// kmsg's formatter writes only the header of ControlledShutdown
		// v0 (request header v0); FuzzParseRequest covers that one.
		if key == controlledShutdownKey && version == 0 {
			return
		}
		if len(clientID) > 1<<10 { // an int16 length; keep it well inside
			clientID = clientID[:1<<10]
		}
		proto.SetVersion(version)
		direct := kmsg.RequestForKey(key)
		direct.SetVersion(version)
		derr := direct.ReadFrom(body)

		var opts []kmsg.RequestFormatterOpt
		if !nullID {
			opts = append(opts, kmsg.FormatterClientID(clientID))
		}
		const corr = 0x0a0b0c0d
		frame := kmsg.NewRequestFormatter(opts...).AppendRequest(nil, rawBody{proto, body}, corr)[4:]
		req, perr := parseRequest(frame, allVersions)

		switch {
		case derr != nil && perr == nil:
			t.Fatalf("%s v%d: kmsg refuses the body (%v), parseRequest accepts it", kmsg.NameForKey(key), version, derr)
		case derr == nil && perr != nil:
			t.Fatalf("%s v%d: kmsg decodes the body, parseRequest refuses it: %v", kmsg.NameForKey(key), version, perr)
		case perr != nil:
			if !errors.Is(perr, errMalformed) {
				t.Fatalf("%s v%d: refused as %v, want malformed", kmsg.NameForKey(key), version, perr)
			}
			return
		}
		wantID := clientID
		if nullID {
			wantID = ""
		}
		if req.Key != key || req.Version != version || req.CorrelationID != corr || req.ClientID != wantID {
			t.Fatalf("header read as key %d v%d corr %#x client %q, want %d v%d %#x %q",
				req.Key, req.Version, req.CorrelationID, req.ClientID, key, version, corr, wantID)
		}
		if !reflect.DeepEqual(req.Body, direct) {
			t.Fatalf("%s v%d: parseRequest decoded\n%+v\nkmsg decoded\n%+v", kmsg.NameForKey(key), version, req.Body, direct)
		}
		again, err := parseRequest(encodeRequest(req.Body, version, corr, &wantID), allVersions)
		if err != nil {
			t.Fatalf("%s v%d: re-encoded request refused: %v", kmsg.NameForKey(key), version, err)
		}
		if !reflect.DeepEqual(again.Body, req.Body) {
			t.Fatalf("%s v%d: re-encoded request decodes differently:\n%+v\nthen\n%+v", kmsg.NameForKey(key), version, req.Body, again.Body)
		}
	})
}
