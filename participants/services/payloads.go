package services

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// The shapes of the example services' payloads, as their refusals name them.
const (
	inventoryShape = `{"item": NAME, "qty": N}`
	paymentShape   = `{"account": NAME, "amount": N}`
	shippingShape  = `{"slot": NAME}`
)

// shapeError says what is wrong with a payload of the wrong shape, naming
// the field at fault and the payload's length but never its content (the
// reason is logged and sent to the coordinator, and a payload may hold
// secrets): "inventory payload (16 bytes): field "qty" must be a whole
// number >= 1 (got 0); want {"item": NAME, "qty": N}".
func shapeError(kind string, payload []byte, shape, problem string) string {
	return fmt.Sprintf("%s payload (%d bytes): %s; want %s", kind, len(payload), problem, shape)
}

// decodeProblem says why payload does not decode into v, naming the field
// when a field has the wrong type; "" when it decodes. It quotes nothing of
// the payload: a syntax error is given by its byte offset.
func decodeProblem(payload []byte, v any) string {
	err := json.Unmarshal(payload, v)
	if err == nil {
		return ""
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		// Value is "number 1.5" for a number that does not fit: keep the kind.
		what, _, _ := strings.Cut(te.Value, " ")
		if te.Field != "" {
			return fmt.Sprintf("field %q is a JSON %s, want a %s", te.Field, what, jsonKind(te.Type.Kind().String()))
		}
		return fmt.Sprintf("it is a JSON %s, want an object", what)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		if se.Offset >= int64(len(payload)) {
			return "it is not JSON: it ends too soon"
		}
		return fmt.Sprintf("it is not JSON: syntax error at byte %d", se.Offset)
	}
	return "it is not JSON"
}

// jsonKind names a Go kind as JSON does.
func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"):
		return "whole number"
	case strings.HasPrefix(goKind, "float"):
		return "number"
	case goKind == "string":
		return "string"
	}
	return goKind
}

// inventoryProblem says what is wrong with an inventory payload's shape;
// "" when nothing is.
func inventoryProblem(payload []byte, o *InventoryOrder) string {
	if p := decodeProblem(payload, o); p != "" {
		return p
	}
	switch {
	case o.Item == "":
		return `field "item" is missing or empty`
	case o.Qty < 1:
		return fmt.Sprintf(`field "qty" must be a whole number >= 1 (got %d)`, o.Qty)
	}
	return ""
}

// paymentProblem says what is wrong with a payment payload's shape; "" when
// nothing is.
func paymentProblem(payload []byte, c *PaymentCharge) string {
	if p := decodeProblem(payload, c); p != "" {
		return p
	}
	switch {
	case c.Account == "":
		return `field "account" is missing or empty`
	case c.Account == Merchant:
		return fmt.Sprintf(`field "account" is %q, which receives the funds and cannot be charged`, Merchant)
	case c.Amount < 1:
		return fmt.Sprintf(`field "amount" must be a whole number >= 1 (got %d)`, c.Amount)
	}
	return ""
}

// shippingProblem says what is wrong with a shipping payload's shape; ""
// when nothing is.
func shippingProblem(payload []byte, r *ShippingRequest) string {
	if p := decodeProblem(payload, r); p != "" {
		return p
	}
	if r.Slot == "" {
		return `field "slot" is missing or empty`
	}
	return ""
}

// unknownKeyStmts lists the statements unknownKey runs on table (column
// col), for a service's statement list: the key's count, then the keys.
func unknownKeyStmts(table, col string) []string {
	return []string{
		`SELECT COUNT(*) FROM ` + table + ` WHERE ` + col + ` = ?`,
		`SELECT ` + col + ` FROM ` + table + ` ORDER BY ` + col + ` LIMIT 21`,
	}
}

// unknownKey reports, after an update that changed no row, whether key is
// missing from table (column col) and if so says so, listing the keys
// there are: `no account "zed" (accounts: alice, bob, carol, dave)`. It
// returns "" when the key exists: the update failed for want of stock,
// funds or room. except is left out of the list (the merchant account). Its
// statements (unknownKeyStmts) run prepared once (stmts).
func unknownKey(ctx context.Context, stmts *stmtCache, dbtx *sql.Tx, table, col, what, key, except string) (string, error) {
	qs := unknownKeyStmts(table, col)
	var n int
	if err := scanRow(ctx, stmts, dbtx, qs[0], []any{key}, &n); err != nil {
		return "", fmt.Errorf("%s: looking up %s %q: %w", table, what, key, err)
	}
	if n > 0 {
		return "", nil
	}
	list, err := stmts.in(ctx, dbtx, qs[1])
	if err != nil {
		return "", fmt.Errorf("%s: listing: %w", table, err)
	}
	rows, err := list.QueryContext(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: listing: %w", table, err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return "", err
		}
		if k != except {
			keys = append(keys, k)
		}
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	if len(keys) > 20 {
		keys = append(keys[:20], "...")
	}
	return fmt.Sprintf("no %s %q (%ss: %s)", what, key, what, strings.Join(keys, ", ")), nil
}

// cmpErr returns err when it is not nil, refusal otherwise.
func cmpErr(err, refusal error) error {
	if err != nil {
		return err
	}
	return refusal
}
