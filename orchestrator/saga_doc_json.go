package orchestrator

import "github.com/natstx/natstx/messages"

// marshal returns doc as JSON: the bytes json.Marshal gives for it, written
// without reflection (saga.Record.AppendJSON) in one buffer sized up front.
// A saga's record is written at each of its steps, so this is on the saga
// engine's hot path.
func (doc *sagaDoc) marshal() ([]byte, error) {
	b := make([]byte, 0, len(`{"owner":`)+len(doc.Owner)+2+len(`,"record":`)+doc.Record.SizeHint()+len(`}`)+sagaDocEscapeRoom)
	b = messages.AppendJSONString(append(b, `{"owner":`...), doc.Owner)
	b, err := doc.Record.AppendJSON(append(b, `,"record":`...))
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// sagaDocEscapeRoom is what marshal allows beyond the size hint for
// escaped characters and long numbers before the buffer must grow.
const sagaDocEscapeRoom = 64
