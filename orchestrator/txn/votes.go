package txn

// Vote is one participant's answer to prepare.
type Vote uint8

// The votes a participant can have.
const (
	// VotePending means no vote has arrived yet.
	VotePending Vote = iota
	// VoteYes means the participant prepared and promised to commit.
	VoteYes
	// VoteNo means the participant refused; the transaction must abort.
	VoteNo
	// VoteReadOnly means the participant changed nothing and holds nothing:
	// it counts as yes, and needs neither commit nor abort.
	VoteReadOnly
)

func (v Vote) String() string {
	switch v {
	case VoteYes:
		return "yes"
	case VoteNo:
		return "no"
	case VoteReadOnly:
		return "read-only"
	default:
		return "pending"
	}
}

// Tally is the state of a unanimous vote.
type Tally uint8

// The results of VoteResult.
const (
	// TallyPending means at least one vote is missing and none is no.
	TallyPending Tally = iota
	// TallyLost means at least one participant voted no.
	TallyLost
	// TallyWon means every participant voted yes.
	TallyWon
)

func (t Tally) String() string {
	switch t {
	case TallyLost:
		return "lost"
	case TallyWon:
		return "won"
	default:
		return "pending"
	}
}

// VoteResult counts votes for two-phase commit, where commit needs every
// participant: one no loses at once, all yes (a read-only vote is a yes)
// wins, anything else is pending.
// An empty list is pending: a transaction with no participants never commits.
func VoteResult(votes []Vote) Tally {
	if len(votes) == 0 {
		return TallyPending
	}
	yes := 0
	for _, v := range votes {
		switch v {
		case VoteNo:
			return TallyLost
		case VoteYes, VoteReadOnly:
			yes++
		}
	}
	if yes == len(votes) {
		return TallyWon
	}
	return TallyPending
}
