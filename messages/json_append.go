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
