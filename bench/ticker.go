//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// ticker fires at a fixed period from a Linux timerfd, read through the Go
// netpoller. Go's own timers cannot pace an open-loop load: when the program
// is idle, the runtime waits in epoll with a whole-millisecond timeout, so a
// timer wakes up to 1 ms late, which swamps the tens of microseconds being
// measured. A timerfd is a kernel hrtimer; its expiry is an epoll event,
// which wakes the runtime when it is due.
//
// A ticker is used by one goroutine and must be closed with close.
type ticker struct {
	f   *os.File
	buf [8]byte
}

const clockMonotonic = 1 // CLOCK_MONOTONIC, <linux/time.h>

// itimerspec is struct itimerspec of timerfd_settime(2).
type itimerspec struct {
	interval syscall.Timespec
	value    syscall.Timespec
}

// startTicker arms a ticker that fires first after first and then every
// period. It returns the time of the first expiry as seen by [time.Now];
// the n-th expiry (from 0) is due at start + n*period.
func startTicker(first, period time.Duration) (*ticker, time.Time, error) {
	fd, _, errno := syscall.Syscall(syscall.SYS_TIMERFD_CREATE, clockMonotonic, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		return nil, time.Time{}, fmt.Errorf("creating timerfd: %w", errno)
	}
	// The fd is non-blocking, so the file is pollable: reads park the
	// goroutine in the netpoller instead of blocking a thread.
	tk := &ticker{f: os.NewFile(fd, "timerfd")}
	spec := itimerspec{
		interval: syscall.NsecToTimespec(int64(period)),
		value:    syscall.NsecToTimespec(int64(first)),
	}
	// start is read just before arming: the schedule runs a syscall's
	// length (about a microsecond) ahead of the timer, for every target alike.
	start := time.Now().Add(first)
	if _, _, errno := syscall.Syscall6(syscall.SYS_TIMERFD_SETTIME, fd, 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0); errno != 0 {
		tk.close()
		return nil, time.Time{}, fmt.Errorf("arming timerfd: %w", errno)
	}
	return tk, start, nil
}

// wait blocks until the ticker fires or the deadline passes, and returns the
// number of expiries since the last wait (more than one if the caller was late).
func (tk *ticker) wait(deadline time.Time) (int, error) {
	if err := tk.f.SetReadDeadline(deadline); err != nil {
		return 0, fmt.Errorf("setting timerfd deadline: %w", err)
	}
	if _, err := tk.f.Read(tk.buf[:]); err != nil {
		return 0, fmt.Errorf("reading timerfd: %w", err)
	}
	return int(binary.NativeEndian.Uint64(tk.buf[:])), nil
}

func (tk *ticker) close() { tk.f.Close() }
