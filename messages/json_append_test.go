package messages

import (
	"bytes"
	"encoding/json"
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
