package partition

import (
	"errors"
	"reflect"
	"testing"

	"github.com/varvelog/varve/partition/vfs"
)

func sampleCheckpoint() *checkpointState {
	return &checkpointState{
		logStart: 10, recovery: 500, recoverySegment: 400, recoveryPos: 8192,
		active:   segTrack{indexCount: 2, timeCount: 1, sinceIndex: 77, maxTs: 123456, maxTsOffset: 450},
		position: 99,
		epochs:   epochTable{{epoch: 1, start: 10}, {epoch: 4, start: 300}},
		producers: producerTable{
			7: {epoch: 2, lastTimestamp: 1000, batches: []producerBatch{{firstSeq: 0, lastSeq: 2, firstOffset: 20, lastOffset: 22}}},
			3: {epoch: 0, lastTimestamp: 5, batches: []producerBatch{{1, 1, 30, 30}, {2, 4, 31, 33}}},
		},
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	c := sampleCheckpoint()
	got, err := decodeCheckpoint(c.encode())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
	}
	fsys := vfs.NewMem()
	if err := vfs.MkdirAllDurable(fsys, "/d"); err != nil {
		t.Fatal(err)
	}
	if err := writeCheckpoint(fsys, "/d", c); err != nil {
		t.Fatal(err)
	}
	fsys.Crash(nil) // the write is durable once writeCheckpoint returns
	got, err = readCheckpoint(fsys, "/d")
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("after crash: %+v %v", got, err)
	}
	if got, err := readCheckpoint(vfs.NewMem(), "/none"); got != nil || err != nil {
		t.Fatalf("missing checkpoint: %v %v", got, err)
	}
}

func TestCheckpointRejectsDamage(t *testing.T) {
	enc := sampleCheckpoint().encode()
	for i := range enc {
		b := append([]byte(nil), enc...)
		b[i] ^= 0x40
		if _, err := decodeCheckpoint(b); !errors.Is(err, errBadCheckpoint) {
			t.Fatalf("flipping byte %d went unnoticed: %v", i, err)
		}
	}
	for n := range len(enc) {
		if _, err := decodeCheckpoint(enc[:n]); !errors.Is(err, errBadCheckpoint) {
			t.Fatalf("truncation to %d bytes went unnoticed: %v", n, err)
		}
	}
}
