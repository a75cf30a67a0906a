package messages

import "time"

// The helpers below share the JSON writing of AppendJSON with other
// packages that write their records without reflection, so that they
// escape strings and write times exactly as encoding/json does.

// AppendJSONString appends s as a JSON string the way json.Marshal writes
// a string: quotes, backslashes and control characters escaped, and also
// <, >, & (HTML-safe), U+2028 and U+2029; invalid UTF-8 becomes U+FFFD.
func AppendJSONString(b []byte, s string) []byte { return appendJSONString(b, s) }

// AppendJSONTime appends t as time.Time's MarshalJSON writes it: RFC 3339
// with as many fractional digits as it takes, quoted. Its error is that of
// MarshalJSON for a time it cannot write (a year outside 0-9999, a zone
// offset of 24 hours or more).
func AppendJSONTime(b []byte, t time.Time) ([]byte, error) { return appendJSONTime(b, t) }

// JSONTimeLen is the length of what AppendJSONTime appends for t, for a
// time it can write: a size hint for a buffer.
func JSONTimeLen(t time.Time) int { return jsonTimeLen(t) }

// JSONStringLen is the length of s as a JSON string if no character of s
// is escaped: a size hint for a buffer.
func JSONStringLen(s string) int { return jsonStringLen(s) }

// JSONArrayLen is the length of the brackets and commas of a JSON array of
// n elements.
func JSONArrayLen(n int) int { return jsonArrayLen(n) }

// JSONIntLen is the length of i in decimal, counted without writing it.
func JSONIntLen(i int64) int {
	if i < 0 {
		return 1 + JSONUintLen(uint64(-i)) // -MinInt64 is MinInt64, whose uint64 is its magnitude
	}
	return JSONUintLen(uint64(i))
}

// JSONUintLen is the length of u in decimal, counted without writing it.
func JSONUintLen(u uint64) int {
	n := 1
	for ; u >= 100; u /= 100 {
		n += 2
	}
	if u >= 10 {
		n++
	}
	return n
}
