package orchestrator

// FixAdmission pins e's admission limit at n (its floor and ceiling too),
// so that a test can fill it with a few transactions.
func FixAdmission(e *Engine, n int) {
	a := e.admission
	a.mu.Lock()
	defer a.mu.Unlock()
	a.limit, a.floor, a.ceiling = n, n, n
}
