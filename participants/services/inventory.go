package services

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/natstx/natstx/participants"
)

// InventoryOrder is the inventory's prepare payload.
type InventoryOrder struct {
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

// InventoryItems and InventoryStock seed a new inventory database: each item
// starts with InventoryStock units available.
var (
	InventoryItems = []string{"widget", "gadget", "gizmo", "doohickey", "sprocket"}
	InventoryStock = 100000
)

var inventorySchema = []string{
	`CREATE TABLE IF NOT EXISTS stock (
	item      TEXT PRIMARY KEY,
	total     INTEGER NOT NULL,
	available INTEGER NOT NULL CHECK (available >= 0),
	reserved  INTEGER NOT NULL CHECK (reserved >= 0),
	sold      INTEGER NOT NULL CHECK (sold >= 0))`,
	`CREATE TABLE IF NOT EXISTS reservations (
	txid  TEXT PRIMARY KEY,
	item  TEXT NOT NULL,
	qty   INTEGER NOT NULL,
	state TEXT NOT NULL)`,
	seedItems(),
}

// The statements the inventory's handlers run, prepared once per database
// (inventoryStmts).
const (
	// invReserve reserves units at prepare.
	invReserve = `UPDATE stock SET available = available - ?, reserved = reserved + ? WHERE item = ? AND available >= ?`
	// invStage records a staged reservation at prepare.
	invStage = `INSERT INTO reservations (txid, item, qty, state) VALUES (?, ?, ?, 'staged')`
	// invStaged reads a staged reservation at commit or abort.
	invStaged = `SELECT item, qty FROM reservations WHERE txid = ? AND state = 'staged'`
	// invTake takes units at a saga action.
	invTake = `UPDATE stock SET available = available - ?, sold = sold + ? WHERE item = ? AND available >= ?`
	// invApply records an applied reservation at a saga action.
	invApply = `INSERT INTO reservations (txid, item, qty, state) VALUES (?, ?, ?, 'applied')`
	// invApplied reads an applied reservation at a compensation.
	invApplied = `SELECT item, qty FROM reservations WHERE txid = ? AND state = 'applied'`
	// invGiveBack returns sold units to stock at a compensation.
	invGiveBack = `UPDATE stock SET sold = sold - ?, available = available + ? WHERE item = ?`
	// invSetState sets a reservation's state.
	invSetState = `UPDATE reservations SET state = ? WHERE txid = ?`
)

// invFinish moves reserved units to column to (sold at commit, available at
// abort).
func invFinish(to string) string {
	return `UPDATE stock SET reserved = reserved - ?, ` + to + ` = ` + to + ` + ? WHERE item = ?`
}

// inventoryStmts lists every statement the inventory's handlers run.
var inventoryStmts = append([]string{
	invReserve, invStage, invStaged, invTake, invApply, invApplied, invGiveBack, invSetState,
	invFinish("sold"), invFinish("available"),
}, unknownKeyStmts("stock", "item")...)

func seedItems() string {
	q := `INSERT INTO stock (item, total, available, reserved, sold) VALUES `
	for i, it := range InventoryItems {
		if i > 0 {
			q += ", "
		}
		q += fmt.Sprintf("('%s', %d, %d, 0, 0)", it, InventoryStock, InventoryStock)
	}
	return q + ` ON CONFLICT DO NOTHING`
}

// Inventory reserves stock at prepare, takes it at commit and releases it at
// abort. Invariant: for every item, available + reserved + sold = total, and
// reserved is the sum of the staged reservations.
type Inventory struct {
	db *sql.DB
	// stmts holds the handlers' statements prepared on db.
	stmts *stmtCache
}

// Kind is "inventory".
func (*Inventory) Kind() string { return "inventory" }

// DB is the inventory's database.
func (s *Inventory) DB() *sql.DB { return s.db }

// Payload returns an order of 1 to 3 units of one item.
func (*Inventory) Payload(i int) []byte {
	b, _ := json.Marshal(InventoryOrder{Item: InventoryItems[i%len(InventoryItems)], Qty: 1 + i%3})
	return b
}

// Prepare reserves the order's units, or refuses when too few are available.
func (s *Inventory) Prepare(ctx context.Context, dbtx *sql.Tx, tx participants.Tx, payload []byte) error {
	var o InventoryOrder
	if p := inventoryProblem(payload, &o); p != "" {
		return fmt.Errorf("%w: %s", ErrRefused, shapeError("inventory", payload, inventoryShape, p))
	}
	n, err := exec(ctx, s.stmts, dbtx, invReserve, o.Qty, o.Qty, o.Item, o.Qty)
	if err != nil {
		return fmt.Errorf("inventory: reserving: %w", err)
	}
	if n != 1 {
		if msg, err := unknownKey(ctx, s.stmts, dbtx, "stock", "item", "item", o.Item, ""); err != nil || msg != "" {
			return cmpErr(err, fmt.Errorf("%w: %s", ErrRefused, msg))
		}
		return fmt.Errorf("%w: out of stock: %d of %q", ErrRefused, o.Qty, o.Item)
	}
	_, err = exec(ctx, s.stmts, dbtx, invStage, tx.ID, o.Item, o.Qty)
	return err
}

// Action, for a saga step, takes the order's units at once (available →
// sold, the reservation applied), or refuses: CodeOutOfStock when too few
// units are available or the item does not exist (the reason says which),
// CodeBadPayload naming the field at fault.
func (s *Inventory) Action(ctx context.Context, dbtx *sql.Tx, st participants.Step, payload []byte) error {
	var o InventoryOrder
	if p := inventoryProblem(payload, &o); p != "" {
		return participants.Refuse(CodeBadPayload, shapeError("inventory", payload, inventoryShape, p))
	}
	n, err := exec(ctx, s.stmts, dbtx, invTake, o.Qty, o.Qty, o.Item, o.Qty)
	if err != nil {
		return fmt.Errorf("inventory: taking stock: %w", err)
	}
	if n != 1 {
		if msg, err := unknownKey(ctx, s.stmts, dbtx, "stock", "item", "item", o.Item, ""); err != nil || msg != "" {
			return cmpErr(err, participants.Refuse(CodeOutOfStock, msg)) // an unknown key is refused with the same code
		}
		return participants.Refuse(CodeOutOfStock, fmt.Sprintf("out of stock: %d of %q", o.Qty, o.Item))
	}
	_, err = exec(ctx, s.stmts, dbtx, invApply, StepKey(st.SagaID, st.Name), o.Item, o.Qty)
	return err
}

// Compensate, for a saga step, releases what the action took (sold →
// available); the payload is not needed: the reservation says what.
func (s *Inventory) Compensate(ctx context.Context, dbtx *sql.Tx, st participants.Step, _ []byte) error {
	key := StepKey(st.SagaID, st.Name)
	var item string
	var qty int
	if err := scanRow(ctx, s.stmts, dbtx, invApplied, []any{key}, &item, &qty); err != nil {
		return fmt.Errorf("inventory: reservation of %s: %w", key, err)
	}
	if err := one(ctx, s.stmts, dbtx, "inventory: stock", invGiveBack, qty, qty, item); err != nil {
		return err
	}
	return one(ctx, s.stmts, dbtx, "inventory: reservation", invSetState, string(TxReleased), key)
}

// Commit turns the reservation into a sale.
func (s *Inventory) Commit(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	return s.finish(ctx, dbtx, tx.ID, "sold", TxApplied)
}

// Abort returns the reserved units to stock.
func (s *Inventory) Abort(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	return s.finish(ctx, dbtx, tx.ID, "available", TxReleased)
}

func (s *Inventory) finish(ctx context.Context, dbtx *sql.Tx, txid, to string, state TxState) error {
	var item string
	var qty int
	if err := scanRow(ctx, s.stmts, dbtx, invStaged, []any{txid}, &item, &qty); err != nil {
		return fmt.Errorf("inventory: reservation of %s: %w", txid, err)
	}
	if err := one(ctx, s.stmts, dbtx, "inventory: stock", invFinish(to), qty, qty, item); err != nil {
		return err
	}
	return one(ctx, s.stmts, dbtx, "inventory: reservation", invSetState, string(state), txid)
}

// TxState reads the reservation of txid.
func (s *Inventory) TxState(ctx context.Context, txid string) (TxState, error) {
	return txState(ctx, s.db, "reservations", txid)
}

// Check verifies stock conservation.
func (s *Inventory) Check(ctx context.Context) (string, error) {
	var total, avail, reserved, sold, staged, soldRes, nSold, nStaged, nReleased int
	err := s.db.QueryRowContext(ctx, `SELECT
	(SELECT COALESCE(SUM(total), 0) FROM stock), (SELECT COALESCE(SUM(available), 0) FROM stock),
	(SELECT COALESCE(SUM(reserved), 0) FROM stock), (SELECT COALESCE(SUM(sold), 0) FROM stock),
	(SELECT COALESCE(SUM(qty), 0) FROM reservations WHERE state = 'staged'),
	(SELECT COALESCE(SUM(qty), 0) FROM reservations WHERE state = 'applied'),
	(SELECT COUNT(*) FROM reservations WHERE state = 'applied'),
	(SELECT COUNT(*) FROM reservations WHERE state = 'staged'),
	(SELECT COUNT(*) FROM reservations WHERE state = 'released')`).Scan(&total, &avail, &reserved, &sold, &staged, &soldRes, &nSold, &nStaged, &nReleased)
	if err != nil {
		return "", fmt.Errorf("inventory: checking: %w", err)
	}
	line := fmt.Sprintf("inventory: stock %d = available %d + reserved %d + sold %d; %d orders sold, %d reserved, %d released",
		total, avail, reserved, sold, nSold, nStaged, nReleased)
	switch {
	case avail+reserved+sold != total:
		return line, fmt.Errorf("%w: inventory: available %d + reserved %d + sold %d != total %d", ErrInvariant, avail, reserved, sold, total)
	case reserved != staged:
		return line, fmt.Errorf("%w: inventory: reserved %d != staged reservations %d", ErrInvariant, reserved, staged)
	case sold != soldRes:
		return line, fmt.Errorf("%w: inventory: sold %d != sold reservations %d", ErrInvariant, sold, soldRes)
	}
	return line, nil
}
