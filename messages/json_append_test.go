package messages

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"testing"
	"time"
)

// TestExportedJSONHelpersWriteWhatJSONMarshalWrites: the helpers other
// packages share write strings and times as json.Marshal does.
func TestExportedJSONHelpersWriteWhatJSONMarshalWrites(t *testing.T) {
	for _, s := range awkwardStrings {
		want, _ := json.Marshal(s)
		if got := AppendJSONString([]byte("x"), s); !bytes.Equal(got[1:], want) || got[0] != 'x' {
			t.Errorf("AppendJSONString(%q) = %s, want x%s", s, got, want)
		}
	}
	for _, at := range []time.Time{{}, time.Date(2026, 11, 30, 2, 30, 0, 120, time.FixedZone("", -9*3600)), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)} {
		want, wantErr := json.Marshal(at)
		got, err := AppendJSONTime(nil, at)
		if !bytes.Equal(got, want) && wantErr == nil || (err == nil) != (wantErr == nil) {
			t.Errorf("AppendJSONTime(%v) = %s, %v; want %s, %v", at, got, err, want, wantErr)
		}
		if err == nil && JSONTimeLen(at) != len(got) {
			t.Errorf("JSONTimeLen(%v) = %d, want %d", at, JSONTimeLen(at), len(got))
		}
	}
}

// TestJSONIntLenIsTheLengthOfTheNumber: the counted lengths are those of
// the numbers written, at every power of ten and at the extremes.
func TestJSONIntLenIsTheLengthOfTheNumber(t *testing.T) {
	for _, i := range []int64{0, 1, 9, 10, 99, 100, 101, 999, 1000, -1, -9, -10, -100, 1e9, 1e18 - 1, 1e18, math.MaxInt64, math.MinInt64, math.MinInt64 + 1} {
		if got, want := JSONIntLen(i), len(strconv.FormatInt(i, 10)); got != want {
			t.Errorf("JSONIntLen(%d) = %d, want %d", i, got, want)
		}
	}
	for _, u := range []uint64{0, 9, 10, 1e19 - 1, 1e19, math.MaxUint64} {
		if got, want := JSONUintLen(u), len(strconv.FormatUint(u, 10)); got != want {
			t.Errorf("JSONUintLen(%d) = %d, want %d", u, got, want)
		}
	}
}
