package expander

import (
	"fmt"

	"github.com/oncesync/oncesync/shared/model"
)

// Step is what an expansion does next. A delivery runs steps until one ends it; each step's
// outcome changes the Facts the next one is chosen from.
type Step int

// The steps. From StepComplete on, each ends the delivery.
const (
	StepCut             Step = iota + 1 // measure the window and cut it into slices (fenced, before any search)
	StepAskBudget                       // ask the source how much of its request budget is left
	StepRestart                         // slice 0 taken over: publish again the slices searched beside it
	StepRepublish                       // publish again the messages of this slice's chunks not DONE
	StepSearch                          // search the slice from its resume point, writing and streaming its chunks
	StepSearchAndDecide                 // the same; on the first page, decide how many slices are searched at once
	StepFinish                          // start the next slice of the chain, and finish the plan if this was the last
	StepComplete                        // wait for the chunk messages, check completion: the key is DONE
	StepIgnore                          // the Job is finished: ack as a duplicate
	StepRefuse                          // the message names a slice the Job does not have: poison
	StepReject                          // the source refused for good (count, search or budget): fail the Job, poison
	StepHandOff                         // the time budget is spent at a checkpoint: hand the key off to a continuation
	StepPause                           // the API budget is down to the reserve: hand the key off; the sweep resumes
	StepDisconnect                      // the tenant's connection cannot authenticate: mark it, pause the Job; reconnecting resumes
)

var stepNames = map[Step]string{
	StepCut: "cut", StepAskBudget: "ask budget", StepRestart: "restart slices", StepRepublish: "republish chunks",
	StepSearch: "search", StepSearchAndDecide: "search and decide", StepFinish: "finish slice", StepComplete: "complete",
	StepIgnore: "ignore", StepRefuse: "refuse", StepReject: "reject", StepHandOff: "hand off", StepPause: "pause",
	StepDisconnect: "disconnect",
}

func (s Step) String() string {
	if n, ok := stepNames[s]; ok {
		return n
	}
	return fmt.Sprintf("step(%d)", int(s))
}

// Final reports whether s ends the delivery.
func (s Step) Final() bool { return s >= StepComplete }

// SliceState is what the Job knows of the slice a message names.
type SliceState int

// Slice states.
const (
	SliceUncut   SliceState = iota // the Job's window is not cut yet
	SlicePending                   // cut, not planned
	SlicePlanned                   // its plan is recorded
	SliceMissing                   // the Job has no such slice
)

// LeaseState is how this delivery came to hold its key.
type LeaseState int

// Lease states.
const (
	LeaseNew       LeaseState = iota // the first claim
	LeaseTakenOver                   // taken over after a crash, an expiry or a release: the owner may have left work unpublished
	LeaseContinued                   // taken over after a hand-off at a checkpoint: nothing was left unpublished
)

// Facts are everything the next step depends on: the Job, the slice and the lease as read at the
// start of the delivery, and what the delivery has done since.
type Facts struct {
	Job      model.JobStatus
	Slice    SliceState
	First    bool // the message names slice 0
	Decided  bool // serial or parallel is decided (Job.SearchSlots > 0)
	Parallel bool // more than one slice is searched at once (Job.SearchSlots > 1)
	Lease    LeaseState
	Reserve  bool // the Job keeps an API reserve, and the source tells its budget
	// Disconnected: the tenant's connection is disconnected (as read), or the source said so in
	// this delivery (source.ErrDisconnected).
	Disconnected bool

	Asked       bool // the budget was asked in this delivery
	Down        bool // it was down to the reserve (asked, or read off a page)
	Spent       bool // the time budget is spent, at a checkpoint
	Rejected    bool // the source refused for good
	Restarted   bool
	Republished bool
	Searched    bool // this delivery searched the slice to its end: its chunks' messages are its own
	Finished    bool // the slice's end was recorded on the Job (chain and plan)
}

// Next is the expansion's decision: the one step that follows from f. It is pure; Handle carries
// the step out and asks again. The order of the rules is the order of their precedence.
func Next(f Facts) Step {
	pending := f.Job == model.JobPending
	switch {
	case f.Job == model.JobCompleted || f.Job == model.JobFailed:
		return StepIgnore
	case f.Rejected:
		return StepReject
	case f.Spent:
		return StepHandOff
	case f.Down:
		return StepPause
	case f.Slice == SliceMissing, f.Slice == SliceUncut && (!f.First || !pending):
		return StepRefuse
	case f.Slice == SliceUncut && f.Disconnected:
		return StepDisconnect // before anything that needs the source
	case f.Slice == SliceUncut && f.Reserve && !f.Asked:
		return StepAskBudget // before the count, which spends requests
	case f.Slice == SliceUncut:
		return StepCut
	case f.First && pending && f.Parallel && f.Lease == LeaseTakenOver && !f.Restarted:
		return StepRestart
	case (f.Lease == LeaseTakenOver || f.Slice == SlicePlanned) && !f.Republished && !f.Searched:
		return StepRepublish
	case pending && f.Slice == SlicePending && f.Disconnected:
		return StepDisconnect // only before a search, like a pause: a planned slice finishes without the source
	case pending && f.Slice == SlicePending && f.Reserve && !f.Asked:
		return StepAskBudget // only before a search: a delivery with nothing left to search must complete its key
	case pending && f.Slice == SlicePending && f.First && !f.Decided:
		return StepSearchAndDecide
	case pending && f.Slice == SlicePending:
		return StepSearch
	case pending && !f.Finished:
		return StepFinish
	default:
		return StepComplete
	}
}
