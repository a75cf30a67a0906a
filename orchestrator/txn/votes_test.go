package txn

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// TestVoteResult runs the table of vote counts in testdata/vote_result.txt:
//
//	vote-result votes=(y,_,n)
//	----
//	lost
//
// y is a yes vote, r a read-only vote, n a no vote, _ a missing one.
// votes=() is the empty list.
func TestVoteResult(t *testing.T) {
	datadriven.RunTest(t, "testdata/vote_result.txt", func(t *testing.T, td *datadriven.TestData) string {
		if td.Cmd != "vote-result" {
			td.Fatalf(t, "unknown command %q", td.Cmd)
		}
		arg, ok := td.Arg("votes")
		if !ok {
			td.Fatalf(t, "vote-result needs votes=(...)")
		}
		var votes []Vote
		for _, s := range arg.Vals {
			switch strings.TrimSpace(s) {
			case "":
			case "y":
				votes = append(votes, VoteYes)
			case "r":
				votes = append(votes, VoteReadOnly)
			case "n":
				votes = append(votes, VoteNo)
			case "_":
				votes = append(votes, VotePending)
			default:
				td.Fatalf(t, "unknown vote %q (want y, r, n or _)", s)
			}
		}
		return VoteResult(votes).String() + "\n"
	})
}

// TestVoteResultExhaustive checks VoteResult against its definition for every
// list of up to five votes: lost if any no, won if every vote is yes or
// read-only and there is at least one, pending otherwise.
func TestVoteResultExhaustive(t *testing.T) {
	all := []Vote{VotePending, VoteYes, VoteNo, VoteReadOnly}
	for n := 0; n <= 5; n++ {
		combos := 1
		for range n {
			combos *= len(all)
		}
		for c := range combos {
			votes := make([]Vote, n)
			anyNo, allYes := false, n > 0
			for i, x := 0, c; i < n; i, x = i+1, x/len(all) {
				votes[i] = all[x%len(all)]
				anyNo = anyNo || votes[i] == VoteNo
				allYes = allYes && (votes[i] == VoteYes || votes[i] == VoteReadOnly)
			}
			want := TallyPending
			switch {
			case anyNo:
				want = TallyLost
			case allYes:
				want = TallyWon
			}
			if got := VoteResult(votes); got != want {
				t.Errorf("VoteResult(%v) = %v, want %v", votes, got, want)
			}
		}
	}
}

// TestVoteResultDoesNotModify checks that counting leaves the votes alone.
func TestVoteResultDoesNotModify(t *testing.T) {
	votes := []Vote{VoteYes, VotePending, VoteNo}
	_ = VoteResult(votes)
	if fmt.Sprint(votes) != "[yes pending no]" {
		t.Errorf("VoteResult changed its input to %v", votes)
	}
}

func TestVoteAndTallyString(t *testing.T) {
	for _, tc := range []struct {
		got  fmt.Stringer
		want string
	}{
		{VotePending, "pending"},
		{VoteYes, "yes"},
		{VoteNo, "no"},
		{Vote(42), "pending"},
		{TallyPending, "pending"},
		{TallyLost, "lost"},
		{TallyWon, "won"},
		{Tally(42), "pending"},
	} {
		if s := tc.got.String(); s != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.got, s, tc.want)
		}
	}
}
