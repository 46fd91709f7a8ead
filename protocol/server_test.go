package protocol

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestRoundTripHeaders(t *testing.T) {
	ts := startServer(t, Config{}, newFakeHandler())
	named := dial(t, ts.addr, kmsg.FormatterClientID("x"))
	null := dial(t, ts.addr) // null client id

	for _, v := range []int16{0, 1, 2, 8, 9, 12} { // header v1 up to 8, v2 from 9
		for _, tc := range []struct {
			c    *client
			want string
		}{{named, "x"}, {null, ""}} {
			resp := tc.c.roundTrip(metadataReq(), v).(*kmsg.MetadataResponse)
			if v >= 2 && (resp.ClusterID == nil || *resp.ClusterID != tc.want) {
				t.Errorf("metadata v%d: client id seen as %v, want %q", v, resp.ClusterID, tc.want)
			}
			if v >= 1 && resp.ControllerID != tc.c.corr {
				t.Errorf("metadata v%d: handler saw correlation id %d, want %d", v, resp.ControllerID, tc.c.corr)
			}
		}
	}
	for _, v := range []int16{3, 4} {
		if resp := named.roundTrip(heartbeat("g"), v).(*kmsg.HeartbeatResponse); resp.ErrorCode != 0 {
			t.Errorf("heartbeat v%d: error %d", v, resp.ErrorCode)
		}
	}
}

// The ApiVersions response uses response header v0 at every version: the byte
// after the correlation id is the first byte of ErrorCode, not a tag count.
func TestApiVersionsResponseHeaderV0(t *testing.T) {
	ts := startServer(t, Config{}, newFakeHandler())
	c := dial(t, ts.addr, kmsg.FormatterClientID("x"))
	for v := int16(0); v <= 4; v++ {
		req := kmsg.NewPtrApiVersionsRequest()
		req.ClientSoftwareName, req.ClientSoftwareVersion = "test", "1"
		want := c.send(req, v)
		frame := c.readFrame()
		if got := int32(binary.BigEndian.Uint32(frame)); got != want {
			t.Fatalf("v%d: correlation id %d, want %d", v, got, want)
		}
		resp := kmsg.NewPtrApiVersionsResponse()
		resp.Version = v
		if err := resp.ReadFrom(frame[4:]); err != nil {
			t.Fatalf("v%d: decode with header v0: %v", v, err)
		}
		if resp.ErrorCode != 0 || !reflect.DeepEqual(stripKeys(resp.ApiKeys), tableKeys()) {
			t.Fatalf("v%d: error %d, keys %+v", v, resp.ErrorCode, resp.ApiKeys)
		}
	}
}

// stripKeys drops the decoder's empty tag state so keys compare with DeepEqual.
func stripKeys(keys []kmsg.ApiVersionsResponseApiKey) []kmsg.ApiVersionsResponseApiKey {
	out := make([]kmsg.ApiVersionsResponseApiKey, len(keys))
	for i, k := range keys {
		out[i] = kmsg.ApiVersionsResponseApiKey{ApiKey: k.ApiKey, MinVersion: k.MinVersion, MaxVersion: k.MaxVersion}
	}
	return out
}

func TestPipelining(t *testing.T) {
	for _, inflight := range []int{0, 1} { // default 32, and constant back-pressure
		t.Run(fmt.Sprintf("max_in_flight=%d", inflight), func(t *testing.T) {
			ts := startServer(t, Config{MaxInFlight: inflight}, newFakeHandler())
			c := dial(t, ts.addr, kmsg.FormatterClientID("p"))
			const n = 50
			var buf []byte
			reqs := make([]kmsg.Request, n)
			corrs := make([]int32, n)
			for i := range n {
				var b []byte
				if i%2 == 0 {
					reqs[i] = metadataReq()
					b, corrs[i] = c.frame(reqs[i], int16(i%13)) // flexible and not
				} else {
					reqs[i] = heartbeat("g")
					b, corrs[i] = c.frame(reqs[i], int16(i%5))
				}
				buf = append(buf, b...)
			}
			c.write(buf) // all 50 before reading anything
			for i := range n {
				corr, _ := c.recv(reqs[i])
				if corr != corrs[i] {
					t.Fatalf("response %d: correlation id %d, want %d", i, corr, corrs[i])
				}
			}
		})
	}
}

// KIP-511: ApiVersions at a version the broker does not know gets a v0
// response with UNSUPPORTED_VERSION and the key list, and the connection
// stays usable.
func TestApiVersionsUnsupportedVersion(t *testing.T) {
	ts := startServer(t, Config{}, newFakeHandler())
	c := dial(t, ts.addr, kmsg.FormatterClientID("x"))
	for _, v := range []int16{99, 5, -1} { // unknown to kmsg; known but above the table; negative
		req := kmsg.NewPtrApiVersionsRequest()
		want := c.send(req, v)
		frame := c.readFrame()
		if got := int32(binary.BigEndian.Uint32(frame)); got != want {
			t.Fatalf("v%d: correlation id %d, want %d", v, got, want)
		}
		resp := kmsg.NewPtrApiVersionsResponse() // v0
		if err := resp.ReadFrom(frame[4:]); err != nil {
			t.Fatalf("v%d: decode v0: %v", v, err)
		}
		if resp.ErrorCode != kerr.UnsupportedVersion.Code {
			t.Fatalf("v%d: error code %d, want %d", v, resp.ErrorCode, kerr.UnsupportedVersion.Code)
		}
		if !reflect.DeepEqual(stripKeys(resp.ApiKeys), tableKeys()) {
			t.Fatalf("v%d: keys %+v, want %+v", v, resp.ApiKeys, tableKeys())
		}
		// Still usable: negotiate at the advertised version.
		c.roundTrip(kmsg.NewPtrApiVersionsRequest(), 3)
		c.roundTrip(metadataReq(), 12)
	}
}

func TestUnsupportedVersionCloses(t *testing.T) {
	ts := startServer(t, Config{}, newFakeHandler())
	healthy := dial(t, ts.addr)
	healthy.roundTrip(metadataReq(), 4)
	for _, tc := range []struct {
		name string
		req  kmsg.Request
		v    int16
	}{
		{"fetch_below_min", kmsg.NewPtrFetchRequest(), 3},
		{"metadata_above_max", metadataReq(), 13},
		{"heartbeat_unknown_to_kmsg", heartbeat("g"), 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ts.addr)
			c.send(tc.req, tc.v)
			c.expectClosed(5 * time.Second)
			healthy.roundTrip(metadataReq(), 4)
		})
	}
}

// rawHeader is a frame of just a request header: key, version, correlation
// id, null client id.
func rawHeader(key, version int16) []byte {
	b := binary.BigEndian.AppendUint32(nil, 10)
	b = binary.BigEndian.AppendUint16(b, uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, 5)
	return binary.BigEndian.AppendUint16(b, 0xffff)
}

func TestUnknownKeyCloses(t *testing.T) {
	ts := startServer(t, Config{}, newFakeHandler())
	healthy := dial(t, ts.addr)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"known_to_kmsg_not_served", rawHeader(60, 0)}, // DescribeCluster
		{"unknown_to_kmsg", rawHeader(1000, 0)},
		{"negative", rawHeader(-1, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ts.addr)
			c.write(tc.b)
			c.expectClosed(5 * time.Second)
			healthy.roundTrip(metadataReq(), 4)
		})
	}
}

func TestMalformedBodyCloses(t *testing.T) {
	ts := startServer(t, Config{}, newFakeHandler())
	c := dial(t, ts.addr)
	// Heartbeat v0 wants a group string; give it a string length of 100
	// with nothing behind it.
	b := rawHeader(12, 0)
	b = binary.BigEndian.AppendUint16(b, 100)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	c.write(b)
	c.expectClosed(5 * time.Second)
	checkHealthy(t, ts.addr)
}

func TestConnInfo(t *testing.T) {
	h := newFakeHandler()
	h.conns = make(chan *ConnInfo, 4)
	ts := startServer(t, Config{Listener: "internal"}, h)
	a, b := dial(t, ts.addr), dial(t, ts.addr)
	a.roundTrip(metadataReq(), 1)
	a.roundTrip(metadataReq(), 1)
	b.roundTrip(metadataReq(), 1)
	a1, a2, b1 := <-h.conns, <-h.conns, <-h.conns
	if a1 != a2 {
		t.Errorf("one connection, two ConnInfos: %+v %+v", a1, a2)
	}
	if a1.ID == b1.ID || a1.ID == 0 || b1.ID == 0 {
		t.Errorf("ids %d and %d, want distinct and non-zero", a1.ID, b1.ID)
	}
	if a1.Listener != "internal" || a1.RemoteAddr.String() != a.nc.LocalAddr().String() || a1.LocalAddr.String() != ts.addr {
		t.Errorf("conn info %+v, client %v -> %v", a1, a.nc.LocalAddr(), ts.addr)
	}
	if addrs := ts.Addrs(); len(addrs) != 1 || addrs[0].String() != ts.addr {
		t.Errorf("Addrs() = %v, want [%s]", addrs, ts.addr)
	}
}
