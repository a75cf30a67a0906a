//go:build race

package dst

// The race detector slows the participants' SQLite (compiled from C to Go)
// about fifteenfold: the CI batches are smaller under it.
func init() { raceDetector = true }
