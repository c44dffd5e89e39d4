package handlers

import (
	"sync"
	"testing"
)

// A phase only moves forward: a late step (ready after a close was asked
// for, a second close) changes nothing, whichever goroutine tries it.
func TestPhaseOnlyMovesForward(t *testing.T) {
	var l life
	if p := l.phase(); p != phaseOpening {
		t.Fatalf("a new connection is %v, want opening", p)
	}
	for _, step := range []struct {
		to    phase
		moved bool
		now   phase
	}{
		{phaseJoining, true, phaseJoining},
		{phaseReplaying, true, phaseReplaying},
		{phaseClosing, true, phaseClosing},
		{phaseLive, false, phaseClosing},    // the replay ended after the close was asked for
		{phaseClosing, false, phaseClosing}, // a second close: the first wins
		{phaseClosed, true, phaseClosed},
		{phaseJoining, false, phaseClosed},
	} {
		if moved := l.advance(step.to); moved != step.moved || l.phase() != step.now {
			t.Fatalf("advance(%v): moved %v, now %v; want %v, %v", step.to, moved, l.phase(), step.moved, step.now)
		}
	}

	// Of many goroutines asking for the same phase, exactly one moves it.
	var racing life
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if racing.advance(phaseClosing) {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if won != 1 || racing.phase() != phaseClosing {
		t.Fatalf("%d goroutines moved the phase to %v, want exactly 1 to closing", won, racing.phase())
	}
}

func TestPhaseNames(t *testing.T) {
	want := []string{"opening", "joining", "replaying", "live", "closing", "closed"}
	for p := phaseOpening; p <= phaseClosed; p++ {
		if got := p.String(); got != want[p] {
			t.Errorf("phase %d is %q, want %q", p, got, want[p])
		}
	}
	if got := phase(9).String(); got != "phase(9)" {
		t.Errorf("an unknown phase is %q", got)
	}
}
