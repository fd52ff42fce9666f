// goqemu_probe drives a QMP unix socket with go-qemu (github.com/digitalocean/go-qemu, as Debian
// 12 packages it) the way its users do, through its three layers: qmp.SocketMonitor, the
// generated raw.Monitor, and hypervisor.Hypervisor / qemu.Domain. It prints one JSON line per
// call, {"call": NAME, "ok": BOOL, "result": ..., "error": "..."}, and judges nothing: the test
// (tests/clients/test_go_qemu.py) holds the expectations, so one run answers for every call even
// when some fail.
//
// Usage: goqemu_probe SOCKET_PATH, or goqemu_probe -faults SOCKET_PATH for the calls that meet
// the faults tests/clients/test_go_qemu.py injects (probeFaults).
//
// Each layer opens its own connection and closes it before the next, because a QEMU monitor
// socket serves one client at a time.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/digitalocean/go-qemu/hypervisor"
	"github.com/digitalocean/go-qemu/qemu"
	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
)

// eventWait bounds how long a call waits for the event it caused; QEMU sends it at once.
const eventWait = 10 * time.Second

var output = json.NewEncoder(os.Stdout)

// report prints one call's outcome.
func report(call string, result interface{}, err error) {
	line := map[string]interface{}{"call": call, "ok": err == nil}
	if err != nil {
		line["error"] = err.Error()
	} else {
		line["result"] = result
	}
	if encodeErr := output.Encode(line); encodeErr != nil {
		panic(encodeErr)
	}
}

// rawReply decodes what SocketMonitor.Run returns (the whole reply line) for printing.
func rawReply(reply []byte, err error) (interface{}, error) {
	if err != nil {
		return nil, err
	}
	var decoded interface{}
	return decoded, json.Unmarshal(reply, &decoded)
}

// drain reads events as they come, as a go-qemu user must: both SocketMonitor and qemu.Domain
// hand events over on unbuffered channels from the goroutine that also reads command replies,
// and QEMU sends some events (STOP) before the reply to the command that caused them, so an
// event nobody reads yet would hold up that reply forever.
func drain(events <-chan qmp.Event) <-chan qmp.Event {
	buffered := make(chan qmp.Event, 64)
	go func() {
		defer close(buffered)
		for event := range events {
			buffered <- event
		}
	}()
	return buffered
}

// waitForEvent returns the name of the first event named want, or an error after eventWait.
func waitForEvent(events <-chan qmp.Event, want string) (interface{}, error) {
	timeout := time.After(eventWait)
	for {
		select {
		case event, open := <-events:
			if !open {
				return nil, fmt.Errorf("event stream closed before %s", want)
			}
			if event.Event == want {
				return event.Event, nil
			}
		case <-timeout:
			return nil, fmt.Errorf("no %s event within %s", want, eventWait)
		}
	}
}

func connect(socket string) (*qmp.SocketMonitor, error) {
	monitor, err := qmp.NewSocketMonitor("unix", socket, eventWait)
	if err != nil {
		return nil, err
	}
	return monitor, monitor.Connect()
}

// probeQMP drives qmp.SocketMonitor directly: the greeting, Run, Events and RunWithFile.
func probeQMP(socket string) {
	monitor, err := connect(socket)
	if err != nil {
		report("qmp.Connect", nil, err)
		return
	}
	report("qmp.Connect", map[string]interface{}{
		"version":      monitor.Version.String(),
		"capabilities": monitor.Capabilities,
	}, nil)
	defer func() { report("qmp.Disconnect", nil, monitor.Disconnect()) }()

	reply, err := rawReply(monitor.Run([]byte(`{"execute":"query-status"}`)))
	report("qmp.Run(query-status)", reply, err)

	stream, err := monitor.Events(context.Background())
	events := drain(stream)
	if err != nil {
		report("qmp.Events(STOP)", nil, err)
	} else {
		if _, err := monitor.Run([]byte(`{"execute":"stop"}`)); err != nil {
			report("qmp.Events(STOP)", nil, err)
		} else {
			report(waitForEventCall("qmp.Events(STOP)", events, "STOP"))
		}
		if _, err := monitor.Run([]byte(`{"execute":"cont"}`)); err != nil {
			report("qmp.Events(RESUME)", nil, err)
		} else {
			report(waitForEventCall("qmp.Events(RESUME)", events, "RESUME"))
		}
	}

	// getfd takes the descriptor that comes with the command (SCM_RIGHTS); go-qemu refuses to
	// send one unless the greeting lists the "oob" capability.
	reader, writer, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	defer reader.Close()
	defer writer.Close()
	reply, err = rawReply(monitor.RunWithFile(
		[]byte(`{"execute":"getfd","arguments":{"fdname":"goqemu-pipe"}}`), writer))
	report("qmp.RunWithFile(getfd)", reply, err)
	reply, err = rawReply(monitor.Run(
		[]byte(`{"execute":"closefd","arguments":{"fdname":"goqemu-pipe"}}`)))
	report("qmp.Run(closefd)", reply, err)
}

func waitForEventCall(call string, events <-chan qmp.Event, want string) (string, interface{}, error) {
	result, err := waitForEvent(events, want)
	return call, result, err
}

// probeRaw drives the generated raw.Monitor (one typed method per QMP command).
func probeRaw(socket string) {
	monitor, err := connect(socket)
	if err != nil {
		report("raw.NewMonitor", nil, err)
		return
	}
	defer monitor.Disconnect()
	api := raw.NewMonitor(monitor)

	version, err := api.QueryVersion()
	report("raw.QueryVersion", version, err)
	status, err := api.QueryStatus()
	report("raw.QueryStatus", map[string]interface{}{
		"status": status.Status.String(), "running": status.Running,
	}, err)
	name, err := api.QueryName()
	report("raw.QueryName", name, err)
	uuid, err := api.QueryUUID()
	report("raw.QueryUUID", uuid, err)
	target, err := api.QueryTarget()
	report("raw.QueryTarget", target, err)
	kvm, err := api.QueryKVM()
	report("raw.QueryKVM", kvm, err)
	commands, err := api.QueryCommands()
	report("raw.QueryCommands", len(commands), err)
	chardevs, err := api.QueryChardev()
	report("raw.QueryChardev", len(chardevs), err)
	report("raw.Stop", nil, api.Stop())
	status, err = api.QueryStatus()
	report("raw.QueryStatus(after Stop)", status.Status.String(), err)
	report("raw.Cont", nil, api.Cont())
	// Without a descriptor attached, QEMU refuses getfd: the error is the result here.
	report("raw.Getfd(no fd)", nil, api.Getfd("goqemu-none"))
}

// probeHypervisor drives hypervisor.Hypervisor over a SocketDriver, and the qemu.Domain it hands
// out, as a management tool does.
func probeHypervisor(socket string) {
	driver := hypervisor.NewSocketDriver([]hypervisor.SocketAddress{
		{Network: "unix", Address: socket, Timeout: eventWait},
	})
	hv := hypervisor.New(driver)
	names, err := hv.DomainNames()
	report("hypervisor.DomainNames", names, err)
	var domain *qemu.Domain
	domain, err = hv.Domain(socket)
	if err != nil {
		report("hypervisor.Domain", nil, err)
		return
	}
	report("hypervisor.Domain", domain.Name, nil)
	defer func() { report("Domain.Close", nil, domain.Close()) }()

	status, err := domain.Status()
	report("Domain.Status", status.String(), err)
	version, err := domain.Version()
	report("Domain.Version", version, err)
	packageVersion, err := domain.PackageVersion()
	report("Domain.PackageVersion", packageVersion, err)
	commands, err := domain.Commands()
	report("Domain.Commands", len(commands), err)
	supported, err := domain.Supported("getfd")
	report("Domain.Supported(getfd)", supported, err)
	blockDevices, err := domain.BlockDevices()
	report("Domain.BlockDevices", blockDevices, err)
	blockJobs, err := domain.BlockJobs()
	report("Domain.BlockJobs", blockJobs, err)
	blockStats, err := domain.BlockStats()
	report("Domain.BlockStats", blockStats, err)
	pciDevices, err := domain.PCIDevices()
	report("Domain.PCIDevices", len(pciDevices), err)
	// query-cpus left QEMU in 6.0; go-qemu still calls it, and QEMU 7.2 says CommandNotFound.
	cpus, err := domain.CPUs()
	report("Domain.CPUs", cpus, err)

	stream, done, err := domain.Events()
	if err != nil {
		report("Domain.Events(RESET)", nil, err)
		return
	}
	defer close(done)
	events := drain(stream)
	if err := domain.SystemReset(); err != nil {
		report("Domain.Events(RESET)", nil, err)
		return
	}
	report(waitForEventCall("Domain.Events(RESET)", events, "RESET"))
}

// reportError prints a call that is expected to fail with the error's text and Go type, since
// go-qemu hands a QMP error over as errors.New(desc) (qmp/qmp.go, response.Err): the class is
// not part of it.
func reportError(call string, err error) {
	line := map[string]interface{}{"call": call, "ok": err == nil}
	if err != nil {
		line["error"] = err.Error()
		line["type"] = fmt.Sprintf("%T", err)
	}
	if encodeErr := output.Encode(line); encodeErr != nil {
		panic(encodeErr)
	}
}

// probeFaults makes, over one raw.Monitor connection, the calls the faults file of the test
// aims at: query-status failing once with an injected error, then answering; stop closing the
// connection before its reply; and a call on the connection that is gone. It also says whether
// the event stream ended with the connection.
func probeFaults(socket string) {
	monitor, err := connect(socket)
	if err != nil {
		report("faults.Connect", nil, err)
		return
	}
	defer monitor.Disconnect()
	stream, err := monitor.Events(context.Background())
	if err != nil {
		report("faults.Events", nil, err)
		return
	}
	events := drain(stream)
	api := raw.NewMonitor(monitor)

	_, err = api.QueryStatus()
	reportError("faults.QueryStatus(error)", err)
	status, err := api.QueryStatus()
	report("faults.QueryStatus(again)", status.Status.String(), err)
	reportError("faults.Stop(disconnect)", api.Stop())
	reportError("faults.Cont(after disconnect)", api.Cont())
	report(waitForClose("faults.Events(closed)", events))
}

// waitForClose reports whether the event stream closes (go-qemu closes it when the connection
// ends) within eventWait, and the events it carried until then.
func waitForClose(call string, events <-chan qmp.Event) (string, interface{}, error) {
	timeout := time.After(eventWait)
	seen := []string{}
	for {
		select {
		case event, open := <-events:
			if !open {
				return call, seen, nil
			}
			seen = append(seen, event.Event)
		case <-timeout:
			return call, nil, fmt.Errorf("event stream still open after %s", eventWait)
		}
	}
}

func main() {
	switch {
	case len(os.Args) == 2:
		socket := os.Args[1]
		probeQMP(socket)
		probeRaw(socket)
		probeHypervisor(socket)
	case len(os.Args) == 3 && os.Args[1] == "-faults":
		probeFaults(os.Args[2])
	default:
		fmt.Fprintln(os.Stderr, "usage: goqemu_probe [-faults] SOCKET_PATH")
		os.Exit(2)
	}
}
