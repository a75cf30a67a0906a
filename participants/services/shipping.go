package services

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/natstx/natstx/participants"
)

// ShippingRequest is the shipping service's prepare payload.
type ShippingRequest struct {
	Slot string `json:"slot"`
}

// ShippingSlots and ShippingCapacity seed a new shipping database: each slot
// takes ShippingCapacity deliveries.
var (
	ShippingSlots    = []string{"mon", "tue", "wed", "thu", "fri"}
	ShippingCapacity = 100000
)

var shippingSchema = []string{
	`CREATE TABLE IF NOT EXISTS slots (
	slot     TEXT PRIMARY KEY,
	capacity INTEGER NOT NULL,
	held     INTEGER NOT NULL CHECK (held >= 0),
	booked   INTEGER NOT NULL CHECK (booked >= 0),
	CHECK (held + booked <= capacity))`,
	`CREATE TABLE IF NOT EXISTS bookings (
	txid  TEXT PRIMARY KEY,
	slot  TEXT NOT NULL,
	state TEXT NOT NULL)`,
	seedSlots(),
}

// The statements the shipping service's handlers run, prepared once per
// database (shippingStmts).
const (
	// shipHold holds a place in a slot at prepare.
	shipHold = `UPDATE slots SET held = held + 1 WHERE slot = ? AND held + booked < capacity`
	// shipStage records a staged booking at prepare.
	shipStage = `INSERT INTO bookings (txid, slot, state) VALUES (?, ?, 'staged')`
	// shipStaged reads a staged booking at commit or abort.
	shipStaged = `SELECT slot FROM bookings WHERE txid = ? AND state = 'staged'`
	// shipBook books a place in a slot at a saga action.
	shipBook = `UPDATE slots SET booked = booked + 1 WHERE slot = ? AND held + booked < capacity`
	// shipApply records an applied booking at a saga action.
	shipApply = `INSERT INTO bookings (txid, slot, state) VALUES (?, ?, 'applied')`
	// shipApplied reads an applied booking at a compensation.
	shipApplied = `SELECT slot FROM bookings WHERE txid = ? AND state = 'applied'`
	// shipCancel cancels a booked place at a compensation.
	shipCancel = `UPDATE slots SET booked = booked - 1 WHERE slot = ?`
	// shipSetState sets a booking's state.
	shipSetState = `UPDATE bookings SET state = ? WHERE txid = ?`
	// shipCommitSet and shipAbortSet are what commit and abort do to the
	// held place's slot (shipFinish).
	shipCommitSet = "held = held - 1, booked = booked + 1"
	shipAbortSet  = "held = held - 1"
)

// shipFinish updates a held place's slot with set (shipCommitSet,
// shipAbortSet).
func shipFinish(set string) string { return `UPDATE slots SET ` + set + ` WHERE slot = ?` }

// shippingStmts lists every statement the shipping service's handlers run.
var shippingStmts = append([]string{
	shipHold, shipStage, shipStaged, shipBook, shipApply, shipApplied, shipCancel, shipSetState,
	shipFinish(shipCommitSet), shipFinish(shipAbortSet),
}, unknownKeyStmts("slots", "slot")...)

func seedSlots() string {
	q := `INSERT INTO slots (slot, capacity, held, booked) VALUES `
	for i, s := range ShippingSlots {
		if i > 0 {
			q += ", "
		}
		q += fmt.Sprintf("('%s', %d, 0, 0)", s, ShippingCapacity)
	}
	return q + ` ON CONFLICT DO NOTHING`
}

// Shipping holds a delivery slot at prepare, books it at commit and frees it
// at abort. Invariant: per slot, held + booked <= capacity, held is the number
// of staged bookings and booked the number of applied ones.
type Shipping struct {
	db *sql.DB
	// stmts holds the handlers' statements prepared on db.
	stmts *stmtCache
}

// Kind is "shipping".
func (*Shipping) Kind() string { return "shipping" }

// DB is the shipping service's database.
func (s *Shipping) DB() *sql.DB { return s.db }

// Payload returns a request for one slot.
func (*Shipping) Payload(i int) []byte {
	b, _ := json.Marshal(ShippingRequest{Slot: ShippingSlots[i%len(ShippingSlots)]})
	return b
}

// Prepare holds a place in the slot, or refuses when it is full.
func (s *Shipping) Prepare(ctx context.Context, dbtx *sql.Tx, tx participants.Tx, payload []byte) error {
	var r ShippingRequest
	if p := shippingProblem(payload, &r); p != "" {
		return fmt.Errorf("%w: %s", ErrRefused, shapeError("shipping", payload, shippingShape, p))
	}
	n, err := exec(ctx, s.stmts, dbtx, shipHold, r.Slot)
	if err != nil {
		return fmt.Errorf("shipping: holding: %w", err)
	}
	if n != 1 {
		if msg, err := unknownKey(ctx, s.stmts, dbtx, "slots", "slot", "slot", r.Slot, ""); err != nil || msg != "" {
			return cmpErr(err, fmt.Errorf("%w: %s", ErrRefused, msg))
		}
		return fmt.Errorf("%w: no free place in slot %q", ErrRefused, r.Slot)
	}
	_, err = exec(ctx, s.stmts, dbtx, shipStage, tx.ID, r.Slot)
	return err
}

// Action, for a saga step, books a place in the slot at once (the booking
// applied), or refuses: CodeNoCapacity when the slot is full or does not
// exist (the reason says which), CodeBadPayload naming the field at fault.
func (s *Shipping) Action(ctx context.Context, dbtx *sql.Tx, st participants.Step, payload []byte) error {
	var r ShippingRequest
	if p := shippingProblem(payload, &r); p != "" {
		return participants.Refuse(CodeBadPayload, shapeError("shipping", payload, shippingShape, p))
	}
	n, err := exec(ctx, s.stmts, dbtx, shipBook, r.Slot)
	if err != nil {
		return fmt.Errorf("shipping: booking: %w", err)
	}
	if n != 1 {
		if msg, err := unknownKey(ctx, s.stmts, dbtx, "slots", "slot", "slot", r.Slot, ""); err != nil || msg != "" {
			return cmpErr(err, participants.Refuse(CodeNoCapacity, msg)) // an unknown key is refused with the same code
		}
		return participants.Refuse(CodeNoCapacity, fmt.Sprintf("no free place in slot %q", r.Slot))
	}
	_, err = exec(ctx, s.stmts, dbtx, shipApply, StepKey(st.SagaID, st.Name), r.Slot)
	return err
}

// Compensate, for a saga step, cancels the booking (booked - 1); the
// payload is not needed: the booking says what.
func (s *Shipping) Compensate(ctx context.Context, dbtx *sql.Tx, st participants.Step, _ []byte) error {
	key := StepKey(st.SagaID, st.Name)
	var slot string
	if err := scanRow(ctx, s.stmts, dbtx, shipApplied, []any{key}, &slot); err != nil {
		return fmt.Errorf("shipping: booking of %s: %w", key, err)
	}
	if err := one(ctx, s.stmts, dbtx, "shipping: slot", shipCancel, slot); err != nil {
		return err
	}
	return one(ctx, s.stmts, dbtx, "shipping: booking", shipSetState, string(TxReleased), key)
}

// Commit books the held place.
func (s *Shipping) Commit(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	return s.finish(ctx, dbtx, tx.ID, shipCommitSet, TxApplied)
}

// Abort frees the held place.
func (s *Shipping) Abort(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	return s.finish(ctx, dbtx, tx.ID, shipAbortSet, TxReleased)
}

func (s *Shipping) finish(ctx context.Context, dbtx *sql.Tx, txid, set string, state TxState) error {
	var slot string
	if err := scanRow(ctx, s.stmts, dbtx, shipStaged, []any{txid}, &slot); err != nil {
		return fmt.Errorf("shipping: booking of %s: %w", txid, err)
	}
	if err := one(ctx, s.stmts, dbtx, "shipping: slot", shipFinish(set), slot); err != nil {
		return err
	}
	return one(ctx, s.stmts, dbtx, "shipping: booking", shipSetState, string(state), txid)
}

// TxState reads the booking of txid.
func (s *Shipping) TxState(ctx context.Context, txid string) (TxState, error) {
	return txState(ctx, s.db, "bookings", txid)
}

// Check verifies the slot counts against the bookings.
func (s *Shipping) Check(ctx context.Context) (string, error) {
	var capacity, held, booked, nStaged, nBooked, nReleased, over int
	err := s.db.QueryRowContext(ctx, `SELECT
	(SELECT COALESCE(SUM(capacity), 0) FROM slots), (SELECT COALESCE(SUM(held), 0) FROM slots), (SELECT COALESCE(SUM(booked), 0) FROM slots),
	(SELECT COUNT(*) FROM bookings WHERE state = 'staged'), (SELECT COUNT(*) FROM bookings WHERE state = 'applied'),
	(SELECT COUNT(*) FROM bookings WHERE state = 'released'),
	(SELECT COUNT(*) FROM slots WHERE held + booked > capacity)`).Scan(&capacity, &held, &booked, &nStaged, &nBooked, &nReleased, &over)
	if err != nil {
		return "", fmt.Errorf("shipping: checking: %w", err)
	}
	line := fmt.Sprintf("shipping: capacity %d, booked %d, held %d; %d bookings applied, %d staged, %d released",
		capacity, booked, held, nBooked, nStaged, nReleased)
	switch {
	case over > 0:
		return line, fmt.Errorf("%w: shipping: %d slots over capacity", ErrInvariant, over)
	case held != nStaged:
		return line, fmt.Errorf("%w: shipping: held %d != staged bookings %d", ErrInvariant, held, nStaged)
	case booked != nBooked:
		return line, fmt.Errorf("%w: shipping: booked %d != applied bookings %d", ErrInvariant, booked, nBooked)
	}
	return line, nil
}
