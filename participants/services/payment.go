package services

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/natstx/natstx/participants"
)

// PaymentCharge is the payment service's prepare payload.
type PaymentCharge struct {
	Account string `json:"account"`
	Amount  int    `json:"amount"`
}

// PaymentAccounts and PaymentBalance seed a new payment database; captured
// funds go to the account named Merchant.
var (
	PaymentAccounts = []string{"alice", "bob", "carol", "dave"}
	PaymentBalance  = 1000000
	Merchant        = "merchant"
)

var paymentSchema = []string{
	`CREATE TABLE IF NOT EXISTS accounts (
	account TEXT PRIMARY KEY,
	balance INTEGER NOT NULL CHECK (balance >= 0),
	held    INTEGER NOT NULL CHECK (held >= 0))`,
	`CREATE TABLE IF NOT EXISTS holds (
	txid    TEXT PRIMARY KEY,
	account TEXT NOT NULL,
	amount  INTEGER NOT NULL,
	state   TEXT NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS funds (id INTEGER PRIMARY KEY CHECK (id = 1), total INTEGER NOT NULL)`,
	seedAccounts(),
	fmt.Sprintf(`INSERT INTO funds (id, total) VALUES (1, %d) ON CONFLICT DO NOTHING`, len(PaymentAccounts)*PaymentBalance),
}

// The statements the payment service's handlers run, prepared once per
// database (paymentStmts).
const (
	// payHold holds an amount at prepare.
	payHold = `UPDATE accounts SET balance = balance - ?, held = held + ? WHERE account = ? AND balance >= ?`
	// payStage records a staged hold at prepare.
	payStage = `INSERT INTO holds (txid, account, amount, state) VALUES (?, ?, ?, 'staged')`
	// payStaged reads a staged hold at commit or abort.
	payStaged = `SELECT account, amount FROM holds WHERE txid = ? AND state = 'staged'`
	// payRelease releases a held amount at commit or abort.
	payRelease = `UPDATE accounts SET held = held - ? WHERE account = ?`
	// payDebit takes an amount from an account that has it (a saga action's
	// charge, a compensation's refund from the merchant).
	payDebit = `UPDATE accounts SET balance = balance - ? WHERE account = ? AND balance >= ?`
	// payCredit adds an amount to an account.
	payCredit = `UPDATE accounts SET balance = balance + ? WHERE account = ?`
	// payApply records an applied hold (a charge) at a saga action.
	payApply = `INSERT INTO holds (txid, account, amount, state) VALUES (?, ?, ?, 'applied')`
	// payApplied reads a charge at a compensation.
	payApplied = `SELECT account, amount FROM holds WHERE txid = ? AND state = 'applied'`
	// paySetState sets a hold's state.
	paySetState = `UPDATE holds SET state = ? WHERE txid = ?`
)

// paymentStmts lists every statement the payment service's handlers run.
var paymentStmts = append([]string{
	payHold, payStage, payStaged, payRelease, payDebit, payCredit, payApply, payApplied, paySetState,
}, unknownKeyStmts("accounts", "account")...)

func seedAccounts() string {
	q := fmt.Sprintf(`INSERT INTO accounts (account, balance, held) VALUES ('%s', 0, 0)`, Merchant)
	for _, a := range PaymentAccounts {
		q += fmt.Sprintf(", ('%s', %d, 0)", a, PaymentBalance)
	}
	return q + ` ON CONFLICT DO NOTHING`
}

// Payment holds funds at prepare, captures them to the merchant at commit and
// releases them at abort. Invariant: the sum of balances and holds over all
// accounts never changes (funds are neither created nor lost), and each
// account's held amount is the sum of its staged holds.
type Payment struct {
	db *sql.DB
	// stmts holds the handlers' statements prepared on db.
	stmts *stmtCache
}

// Kind is "payment".
func (*Payment) Kind() string { return "payment" }

// DB is the payment service's database.
func (s *Payment) DB() *sql.DB { return s.db }

// Payload returns a charge of 10 to 100 to one account.
func (*Payment) Payload(i int) []byte {
	b, _ := json.Marshal(PaymentCharge{Account: PaymentAccounts[i%len(PaymentAccounts)], Amount: 10 * (1 + i%10)})
	return b
}

// Prepare holds the amount, or refuses on insufficient funds.
func (s *Payment) Prepare(ctx context.Context, dbtx *sql.Tx, tx participants.Tx, payload []byte) error {
	var c PaymentCharge
	if p := paymentProblem(payload, &c); p != "" {
		return fmt.Errorf("%w: %s", ErrRefused, shapeError("payment", payload, paymentShape, p))
	}
	n, err := exec(ctx, s.stmts, dbtx, payHold, c.Amount, c.Amount, c.Account, c.Amount)
	if err != nil {
		return fmt.Errorf("payment: holding: %w", err)
	}
	if n != 1 {
		if msg, err := unknownKey(ctx, s.stmts, dbtx, "accounts", "account", "account", c.Account, Merchant); err != nil || msg != "" {
			return cmpErr(err, fmt.Errorf("%w: %s", ErrRefused, msg))
		}
		return fmt.Errorf("%w: insufficient funds: %d from %q", ErrRefused, c.Amount, c.Account)
	}
	_, err = exec(ctx, s.stmts, dbtx, payStage, tx.ID, c.Account, c.Amount)
	return err
}

// Action, for a saga step, charges the amount at once (account → merchant,
// the hold applied), or refuses: CodeInsufficientFunds when the balance is
// too low or the account does not exist (the reason says which),
// CodeBadPayload naming the field at fault.
func (s *Payment) Action(ctx context.Context, dbtx *sql.Tx, st participants.Step, payload []byte) error {
	var c PaymentCharge
	if p := paymentProblem(payload, &c); p != "" {
		return participants.Refuse(CodeBadPayload, shapeError("payment", payload, paymentShape, p))
	}
	n, err := exec(ctx, s.stmts, dbtx, payDebit, c.Amount, c.Account, c.Amount)
	if err != nil {
		return fmt.Errorf("payment: charging: %w", err)
	}
	if n != 1 {
		if msg, err := unknownKey(ctx, s.stmts, dbtx, "accounts", "account", "account", c.Account, Merchant); err != nil || msg != "" {
			return cmpErr(err, participants.Refuse(CodeInsufficientFunds, msg)) // an unknown key is refused with the same code
		}
		return participants.Refuse(CodeInsufficientFunds, fmt.Sprintf("insufficient funds: %d from %q", c.Amount, c.Account))
	}
	if err := one(ctx, s.stmts, dbtx, "payment: credit", payCredit, c.Amount, Merchant); err != nil {
		return err
	}
	_, err = exec(ctx, s.stmts, dbtx, payApply, StepKey(st.SagaID, st.Name), c.Account, c.Amount)
	return err
}

// Compensate, for a saga step, refunds the amount charged (merchant →
// account); the payload is not needed: the charge says what.
func (s *Payment) Compensate(ctx context.Context, dbtx *sql.Tx, st participants.Step, _ []byte) error {
	key := StepKey(st.SagaID, st.Name)
	var account string
	var amount int
	if err := scanRow(ctx, s.stmts, dbtx, payApplied, []any{key}, &account, &amount); err != nil {
		return fmt.Errorf("payment: charge of %s: %w", key, err)
	}
	if err := one(ctx, s.stmts, dbtx, "payment: refund from the merchant", payDebit, amount, Merchant, amount); err != nil {
		return err
	}
	if err := one(ctx, s.stmts, dbtx, "payment: refund", payCredit, amount, account); err != nil {
		return err
	}
	return one(ctx, s.stmts, dbtx, "payment: charge", paySetState, string(TxReleased), key)
}

// Commit captures the held amount to the merchant.
func (s *Payment) Commit(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	return s.finish(ctx, dbtx, tx.ID, true)
}

// Abort releases the held amount back to the account.
func (s *Payment) Abort(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	return s.finish(ctx, dbtx, tx.ID, false)
}

func (s *Payment) finish(ctx context.Context, dbtx *sql.Tx, txid string, capture bool) error {
	var account string
	var amount int
	if err := scanRow(ctx, s.stmts, dbtx, payStaged, []any{txid}, &account, &amount); err != nil {
		return fmt.Errorf("payment: hold of %s: %w", txid, err)
	}
	to, state := account, TxReleased
	if capture {
		to, state = Merchant, TxApplied
	}
	if err := one(ctx, s.stmts, dbtx, "payment: release hold", payRelease, amount, account); err != nil {
		return err
	}
	if err := one(ctx, s.stmts, dbtx, "payment: credit", payCredit, amount, to); err != nil {
		return err
	}
	return one(ctx, s.stmts, dbtx, "payment: hold", paySetState, string(state), txid)
}

// TxState reads the hold of txid.
func (s *Payment) TxState(ctx context.Context, txid string) (TxState, error) {
	return txState(ctx, s.db, "holds", txid)
}

// Check verifies that funds are conserved.
func (s *Payment) Check(ctx context.Context) (string, error) {
	var total, balances, held, staged, merchant, captured, nCaptured, nStaged, nReleased int
	err := s.db.QueryRowContext(ctx, `SELECT
	(SELECT total FROM funds), (SELECT COALESCE(SUM(balance), 0) FROM accounts), (SELECT COALESCE(SUM(held), 0) FROM accounts),
	(SELECT COALESCE(SUM(amount), 0) FROM holds WHERE state = 'staged'),
	(SELECT balance FROM accounts WHERE account = ?),
	(SELECT COALESCE(SUM(amount), 0) FROM holds WHERE state = 'applied'),
	(SELECT COUNT(*) FROM holds WHERE state = 'applied'),
	(SELECT COUNT(*) FROM holds WHERE state = 'staged'),
	(SELECT COUNT(*) FROM holds WHERE state = 'released')`, Merchant).Scan(&total, &balances, &held, &staged, &merchant, &captured, &nCaptured, &nStaged, &nReleased)
	if err != nil {
		return "", fmt.Errorf("payment: checking: %w", err)
	}
	line := fmt.Sprintf("payment: funds %d = balances %d + held %d; merchant %d captured by %d charges, %d held, %d released",
		total, balances, held, merchant, nCaptured, nStaged, nReleased)
	switch {
	case balances+held != total:
		return line, fmt.Errorf("%w: payment: balances %d + held %d != funds %d", ErrInvariant, balances, held, total)
	case held != staged:
		return line, fmt.Errorf("%w: payment: held %d != staged holds %d", ErrInvariant, held, staged)
	case merchant != captured:
		return line, fmt.Errorf("%w: payment: merchant balance %d != captured holds %d", ErrInvariant, merchant, captured)
	}
	return line, nil
}
