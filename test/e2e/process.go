package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Process is a child process whose output goes to a log file.
type Process struct {
	Name    string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done is closed

	stopOnce sync.Once
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the exit error once Done is closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Pid is the process id, which is also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM to the process group, waits up to grace for the leader to exit and then
// sends SIGKILL to the group. It is safe to call more than once and after the process exited.
func (p *Process) Stop(grace time.Duration) {
	p.stopOnce.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
		// The group may hold children of the leader even after the leader exited.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	})
}

// spawner starts children from one goroutine locked to one OS thread for the life of the test
// binary. Pdeathsig fires when the *thread* that forked the child exits, not the process; if the
// Go runtime forked from an arbitrary thread and later retired it, children would be killed at
// random (golang/go#27505). Pinning the fork to a thread that only exits with the process makes
// the signal mean "the test binary died", which is what we want after a panic or a timeout.
type spawner struct {
	reqs chan spawnReq
}

type spawnReq struct {
	cmd   *exec.Cmd
	reply chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq)}
	go func() {
		runtime.LockOSThread()
		// Never unlocked and never returns: the thread must outlive every child.
		for r := range s.reqs {
			r.reply <- r.cmd.Start()
		}
		select {}
	}()
	return s
}

var (
	spawnerOnce sync.Once
	theSpawner  *spawner
)

// start launches name with args, output appended to logPath, in its own process group and with
// SIGKILL as its parent-death signal.
func start(name, logPath string, env []string, bin string, args ...string) (*Process, error) {
	// One spawner per test binary: the thread it pins is a process-wide resource.
	spawnerOnce.Do(func() { theSpawner = newSpawner() })

	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log for %s: %w", name, err)
	}
	fmt.Fprintf(logf, "# %s %s %q\n", time.Now().Format(time.RFC3339Nano), bin, args)
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	reply := make(chan error)
	theSpawner.reqs <- spawnReq{cmd: cmd, reply: reply}
	if err := <-reply; err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// errExited is returned by readiness waits when the process died before becoming ready.
var errExited = errors.New("process exited before it became ready")
