package controlplane

import (
	"strings"
	"testing"
	"time"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

func TestEventLog(t *testing.T) {
	s := openStore(t)
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }

	page, err := s.Events(0, 100, nil)
	if err != nil || len(page.Events) != 0 || page.Latest != 0 || page.Reset {
		t.Fatalf("empty log: %+v %v", page, err)
	}
	for i, repo := range []string{"team/app", "other/x", "team/web", "team/app"} {
		now = now.Add(time.Hour)
		if err := s.AppendEvent(acrapi.Event{Repository: repo, Tag: "v" + string(rune('1'+i)), Action: acrapi.EventPush}); err != nil {
			t.Fatal(err)
		}
	}
	team := func(r string) bool { return strings.HasPrefix(r, "team/") }
	page, _ = s.Events(0, 100, team)
	if len(page.Events) != 3 || page.Latest != 4 || page.Next != 4 || page.Reset || page.Events[0].Seq != 1 {
		t.Fatalf("filtered page: %+v", page)
	}
	page, _ = s.Events(1, 1, team)
	if len(page.Events) != 1 || page.Events[0].Seq != 3 || !page.More || page.Next != 3 {
		t.Fatalf("limited page: %+v", page)
	}
	page, _ = s.Events(4, 100, team)
	if len(page.Events) != 0 || page.Next != 4 {
		t.Fatalf("caught up: %+v", page)
	}
	// Events older than the TTL go; a cursor before them must reconcile.
	n, err := s.PruneEvents(90 * time.Minute)
	if err != nil || n != 2 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	if page, _ = s.Events(0, 100, team); !page.Reset {
		t.Fatalf("cursor 0 after pruning: %+v", page)
	}
	if page, _ = s.Events(2, 100, team); page.Reset || len(page.Events) != 2 {
		t.Fatalf("cursor 2 after pruning: %+v", page)
	}
	if page, _ = s.Events(99, 100, team); !page.Reset {
		t.Fatalf("a cursor past the log: %+v", page)
	}
}

func TestLongestMessageTTL(t *testing.T) {
	s := openStore(t)
	if ttl, err := s.LongestMessageTTL(); err != nil || ttl != 48*time.Hour {
		t.Fatalf("default: %v %v", ttl, err)
	}
	sp := spec("siteT0001", "", "", "a")
	sp.SyncMessageTTL = "P30D"
	mustCreate(t, s, sp)
	mustCreate(t, s, spec("siteT0002", "", "", "a"))
	if ttl, _ := s.LongestMessageTTL(); ttl != 30*24*time.Hour {
		t.Fatalf("longest: %v", ttl)
	}
}
