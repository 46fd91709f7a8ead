package client

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The vectors of Kafka's UtilsTest.testMurmur2 (Java ints).
func TestMurmur2MatchesKafka(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int32
	}{
		{"21", -973932308},
		{"foobar", -790332482},
		{"a-little-bit-long-string", -985981536},
		{"a-little-bit-longer-string", -1486304829},
		{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
		{"abc", 479470107},
	} {
		if got := int32(murmur2([]byte(tc.in))); got != tc.want {
			t.Errorf("murmur2(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// KeyPartition agrees with the partitioner New installs (and with kgo's
// StickyKeyPartitioner) for keyed records.
func TestKeyPartitionMatchesKgo(t *testing.T) {
	// The uniform partitioner partitions only through PartitionByBackup;
	// keyed records never consult the backup iterator.
	uniform := kgo.UniformBytesPartitioner(64<<10, true, true, nil).ForTopic("t").(kgo.TopicBackupPartitioner)
	sticky := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for _, n := range []int{1, 2, 3, 7, 12, 100} {
		for i := range 500 {
			key := []byte(fmt.Sprintf("key-%d", i))
			r := &kgo.Record{Topic: "t", Key: key}
			want := KeyPartition(key, n)
			if got := uniform.PartitionByBackup(r, n, nil); got != want {
				t.Fatalf("n=%d key %q: uniform partitioner %d, KeyPartition %d", n, key, got, want)
			}
			if got := sticky.Partition(r, n); got != want {
				t.Fatalf("n=%d key %q: sticky partitioner %d, KeyPartition %d", n, key, got, want)
			}
		}
	}
}

// Partition numbers the Java client's default partitioner gives these keys
// among 1,000 partitions (kafka-python's test_murmur2_java_compatibility
// records them, "compared with output from Kafka's Partitioner"). An
// empty key is a key: it is hashed, not spread as a null key is.
func TestKeyPartitionMatchesJavaPartitions(t *testing.T) {
	sticky := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	uniform := kgo.UniformBytesPartitioner(64<<10, true, true, nil).ForTopic("t").(kgo.TopicBackupPartitioner)
	for _, tc := range []struct {
		key  string
		want int
	}{
		{"", 681},
		{"a", 524},
		{"ab", 434},
		{"abc", 107},
		{"123456789", 566},
		{"\x00 ", 742},
	} {
		key := []byte(tc.key)
		if got := KeyPartition(key, 1000); got != tc.want {
			t.Errorf("KeyPartition(%q, 1000) = %d, Java says %d", tc.key, got, tc.want)
		}
		r := &kgo.Record{Topic: "t", Key: key}
		if got := sticky.Partition(r, 1000); got != tc.want {
			t.Errorf("kgo.StickyKeyPartitioner: %q -> %d, Java says %d", tc.key, got, tc.want)
		}
		if got := uniform.PartitionByBackup(r, 1000, nil); got != tc.want {
			t.Errorf("the partitioner New installs: %q -> %d, Java says %d", tc.key, got, tc.want)
		}
	}
}
