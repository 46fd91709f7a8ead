package client

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestFormat(t *testing.T) {
	r := &kgo.Record{
		Topic: "demo", Partition: 2, Offset: 41, Timestamp: time.UnixMilli(1700000000123),
		Key: []byte("k1"), Value: []byte("hello"),
		Headers: []kgo.RecordHeader{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("x=y")}},
	}
	null := &kgo.Record{Topic: "demo", Timestamp: time.UnixMilli(5)}
	for _, tc := range []struct {
		format, want, wantNull string
	}{
		{`%k=%s@%p/%o\n`, "k1=hello@2/41\n", "=@0/0\n"},
		{`%t %T %h`, "demo 1700000000123 a=1,b=x=y", "demo 5 "},
		{`%K:%S\t100%%\r\\`, "2:5\t100%\r\\", "0:0\t100%\r\\"},
		{`plain`, "plain", "plain"},
		{``, "", ""},
	} {
		f, err := ParseFormat(tc.format)
		if err != nil {
			t.Fatalf("%q: %v", tc.format, err)
		}
		if got := string(f.Append([]byte(">"), r)); got != ">"+tc.want {
			t.Errorf("%q: %q, want %q", tc.format, got, ">"+tc.want)
		}
		if got := string(f.Append(nil, null)); got != tc.wantNull {
			t.Errorf("%q on a null record: %q, want %q", tc.format, got, tc.wantNull)
		}
	}
	for _, bad := range []string{`%`, `%x`, `\`, `\q`, `a%s%`} {
		if _, err := ParseFormat(bad); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line", bad, err)
		}
	}
}

func TestAppendJSON(t *testing.T) {
	r := &kgo.Record{Topic: "t", Partition: 1, Offset: 7, Timestamp: time.UnixMilli(99), Key: []byte("k"), Value: []byte(`v"`),
		Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("1")}, {Key: "h", Value: []byte("2")}}}
	got, err := AppendJSON(nil, r)
	want := `{"topic":"t","partition":1,"offset":7,"timestamp":99,"key":"k","value":"v\"","headers":[{"key":"h","value":"1"},{"key":"h","value":"2"}]}` + "\n"
	if err != nil || string(got) != want {
		t.Errorf("%s %v\nwant %s", got, err, want)
	}
	got, _ = AppendJSON(nil, &kgo.Record{Topic: "t", Value: []byte{}, Timestamp: time.UnixMilli(0)})
	want = `{"topic":"t","partition":0,"offset":0,"timestamp":0,"key":null,"value":"","headers":[]}` + "\n"
	if string(got) != want {
		t.Errorf("null key, empty value: %s\nwant %s", got, want)
	}
}
