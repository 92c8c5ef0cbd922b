"""The fleet playbook end to end on this machine (ctest label fleet; README, "Fleet runs").

Three sshd instances on 127.0.0.2-4, with keys made for this test in a temporary directory, are
three inventory hosts; nothing outside this machine is contacted. The controller's build is
shipped as one tarball (fleet_ship=build) so nothing is built three times, and the quick matrix is
cut to two patterns at one footprint. One host gets a VFIO path that does not exist, one host has
no sshd, one names an unknown matrix and one has no matrix at all: each is reported by name with
its reason while the two good hosts finish and merge into one comparison. Then one good host's run
is killed mid-way on the host, and a second playbook run must resume its journal and run nothing
that finished.

    /usr/bin/python3 tests/fleet/loopback_test.py --source DIR --build DIR

Exit 0: passed; 77: skipped (the reason printed); anything else: failed."""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77
SSHD_IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
NO_SSHD_IP = "127.0.0.5"


def skip(reason):
    print(f"fleet test skipped: {reason}")
    sys.exit(SKIP)


def check(ok, what, detail=""):
    if not ok:
        print(f"FAIL: {what}" + (f"\n{detail}" if detail else ""))
        sys.exit(1)
    print(f"ok: {what}")


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    """One port free on every test address (each sshd listens on its own address, same port)."""
    for _ in range(20):
        with socket.socket() as s:
            s.bind((SSHD_IPS[0], 0))
            port = s.getsockname()[1]
        try:
            for ip in SSHD_IPS + [NO_SSHD_IP]:
                with socket.socket() as s:
                    s.bind((ip, port))
            return port
        except OSError:
            continue
    skip("no TCP port free on all of 127.0.0.2-5")


def start_sshds(tmp, port):
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory (root)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{tmp}/host_key")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{tmp}/client_key")
    shutil.copy(f"{tmp}/client_key.pub", f"{tmp}/authorized_keys")
    procs = []
    for ip in SSHD_IPS:
        cfg = f"{tmp}/sshd_{ip}.conf"
        with open(cfg, "w") as f:
            f.write(f"ListenAddress {ip}:{port}\nHostKey {tmp}/host_key\nAuthorizedKeysFile {tmp}/authorized_keys\n"
                    f"PidFile {tmp}/sshd_{ip}.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nMaxStartups 50\n"
                    "Subsystem sftp internal-sftp\n")
        log = open(f"{tmp}/sshd_{ip}.log", "w")
        procs.append(subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", cfg], stdout=log, stderr=log))
    deadline = time.time() + 10
    for ip in SSHD_IPS:
        while True:
            try:
                socket.create_connection((ip, port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    stop(procs)
                    skip(f"sshd did not listen on {ip}:{port}: {open(f'{tmp}/sshd_{ip}.log').read().strip()}")
                time.sleep(0.1)
    return procs


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()


def write_inventory(tmp, port, user):
    ssh = {"ansible_port": port, "ansible_user": user, "ansible_ssh_private_key_file": f"{tmp}/client_key"}
    quick = {"flushbench_matrix": "quick", "flushbench_extra_args": ["--patterns", "nop,wbinvd", "--footprints", "4K"]}
    hosts = {
        "loop-a": {"ansible_host": SSHD_IPS[0], **quick},
        "loop-b": {"ansible_host": SSHD_IPS[1], **quick, "flushbench_vcpu_cpu": 0},
        # The failures, one per kind of bad input.
        "loop-badvfio": {"ansible_host": SSHD_IPS[2], **quick, "flushbench_vfio": "/dev/vfio/flushbench-test-no-such-group"},
        "loop-gone": {"ansible_host": NO_SSHD_IP, **quick},
        "loop-nomatrix": {"ansible_host": SSHD_IPS[2]},
        "loop-badmatrix": {"ansible_host": SSHD_IPS[0], "flushbench_matrix": "no-such-matrix"},
    }
    for name, h in hosts.items():
        h.update(ssh)
        h["flushbench_remote_dir"] = f"{tmp}/remote/{name}"
    with open(f"{tmp}/inventory.json", "w") as f:  # JSON is YAML: Ansible's yaml inventory reads it
        json.dump({"all": {"hosts": hosts}}, f, indent=1)
    return list(hosts)


def write_ansible_cfg(tmp):
    with open(f"{tmp}/ansible.cfg", "w") as f:
        f.write("[defaults]\nhost_key_checking = False\nforks = 6\nretry_files_enabled = False\n"
                f"remote_tmp = {tmp}/ansible-remote\nlocal_tmp = {tmp}/ansible-local\ninterpreter_python = /usr/bin/python3\n"
                "[ssh_connection]\npipelining = True\n"
                f"ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o ControlPath={tmp}/cm-%C "
                "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o ConnectTimeout=5\n")


def playbook(args, tmp, log_name):
    env = dict(os.environ, ANSIBLE_CONFIG=f"{tmp}/ansible.cfg", ANSIBLE_NOCOLOR="1", ANSIBLE_HOME=f"{tmp}/ansible-home",
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")  # the slowest tasks, in the log
    cmd = ["ansible-playbook", "-i", f"{tmp}/inventory.json", f"{args.source}/fleet/site.yml",
           "-e", "fleet_run=loop", "-e", "fleet_ship=build", "-e", f"fleet_build_dir={args.build}",
           "-e", f"fleet_results_root={tmp}/results", "-e", "fleet_poll=1"]
    t0 = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
    with open(f"{tmp}/{log_name}", "w") as f:
        f.write(p.stdout + p.stderr)
    print(f"{log_name}: ansible-playbook exit {p.returncode} in {time.time() - t0:.0f} s")
    return p


def interrupt(tmp, run_dir, host, head):
    """SIGKILL the host's run after its second cell, as a stopped playbook or a reboot would."""
    remote = f"{tmp}/remote/{host}/runs/loop"
    for f in ("results.json", "exit_code", "run.log"):
        os.remove(f"{remote}/{f}") if os.path.exists(f"{remote}/{f}") else None
    for f in ("results.json", "status.json"):
        os.remove(f"{run_dir}/{host}/{f}")
    fb = f"{tmp}/remote/{host}/build-{head}/build/bin/flushbench"
    p = subprocess.Popen([fb, "run", "--matrix", "quick", "--patterns", "nop,wbinvd", "--footprints", "0,4K", "--reps", "1500",
                          "--budget-ms", "0", "--target-pct", "0", "--out", "results.json"],
                         cwd=remote, stderr=subprocess.PIPE, text=True)
    seen = ""
    for line in p.stderr:
        seen += line
        if "[   3/" in line:
            break
    p.kill()
    p.wait()
    check(os.path.exists(f"{remote}/results.json.partial") and not os.path.exists(f"{remote}/results.json"),
          f"{host}: killed mid-run, its journal on the host", seen)


def status(run_dir, host):
    with open(f"{run_dir}/{host}/status.json") as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--build", required=True)
    args = ap.parse_args()
    for tool in ("ansible-playbook", "ssh", "ssh-keygen"):
        if not shutil.which(tool):
            skip(f"{tool} is missing: apt-get install ansible openssh-client openssh-server (scripts/setup.sh does)")
    if not os.access("/usr/sbin/sshd", os.X_OK):
        skip("/usr/sbin/sshd is missing: apt-get install openssh-server (scripts/setup.sh does)")
    if os.geteuid() != 0:
        skip("needs root: sshd on 127.0.0.2-4 and flushbench's /dev/kvm")
    if subprocess.run(["git", "-C", args.source, "rev-parse", "HEAD"], capture_output=True).returncode:
        skip(f"{args.source} is not a git checkout: the playbook ships a commit")
    head = sh("git", "-C", args.source, "rev-parse", "HEAD")[:12]
    version = sh(f"{args.build}/bin/flushbench", "--version")
    check(head in version, f"the build is of HEAD {head} (it ships as the fleet's tarball)",
          f"{version.strip()}: configure again (cmake -S {args.source} -B {args.build}) and build")

    tmp = tempfile.mkdtemp(prefix="flushbench-fleet-test-")
    port = free_port()
    procs = start_sshds(tmp, port)
    try:
        hosts = write_inventory(tmp, port, "root")
        write_ansible_cfg(tmp)
        run_dir = f"{tmp}/results/loop"

        first = playbook(args, tmp, "playbook-1.log")
        out1 = first.stdout + first.stderr
        check(first.returncode != 0, "the first run fails the playbook: hosts need attention", out1[-3000:])
        for h in ("loop-a", "loop-b"):
            check(os.path.exists(f"{run_dir}/{h}/results.json") and os.path.exists(f"{run_dir}/{h}/probe.json")
                  and os.path.exists(f"{run_dir}/{h}/run.log"), f"{h}: results, probe and log fetched", out1[-3000:])
            check(status(run_dir, h)["state"] == "ok", f"{h}: ok", json.dumps(status(run_dir, h)))
        expect = {"loop-badvfio": ("failed", "run", "flushbench-test-no-such-group"),
                  "loop-gone": ("unreachable", "connect", ""),
                  "loop-nomatrix": ("failed", "inventory", "flushbench_matrix is not set"),
                  "loop-badmatrix": ("failed", "inventory", "no-such-matrix")}
        for h, (state, stage, why) in expect.items():
            s = status(run_dir, h)
            check(s["state"] == state and s["stage"] == stage and why in s["reason"],
                  f"{h}: {state} at {stage} with its reason ({s['reason'][:100]})", json.dumps(s))
        summary = open(f"{run_dir}/summary").read()
        print(summary)
        check(all(h in summary for h in hosts), "the summary names every host")
        check("2 ok, 0 skipped" in summary and "4 need attention" in summary, "the summary counts them", summary)

        fb = f"{args.build}/bin/flushbench"
        cmp = json.loads(sh(fb, "compare", run_dir, "--json"))
        names = {h["name"]: h for h in cmp["hosts"]}
        check(set(names) == set(hosts), "the merged comparison lists every host", json.dumps(sorted(names)))
        check(all(names[h]["results"] for h in ("loop-a", "loop-b")), "loop-a and loop-b are merged with results")
        check(all(not names[h]["results"] and names[h]["reason"] for h in expect), "the others are listed with their reasons")
        cells = {c["host"] for r in cmp["rows"] for c in r["cells"]}
        check(cells == {"loop-a", "loop-b"}, "every row has both good hosts side by side", json.dumps(sorted(cells)))
        table = sh(fb, "compare", run_dir)
        check("loop-a" in table and "loop-b" in table and "loop-gone" in table and "unreachable" in table,
              "the table shows the hosts and why one has no results", table)
        report = subprocess.run([fb, "report", run_dir, "--out", f"{tmp}/plots"], capture_output=True, text=True)
        check(report.returncode == 0 and os.path.exists(f"{tmp}/plots/fleet.svg") and os.path.exists(f"{tmp}/plots/fleet.md"),
              "flushbench report draws the fleet's table and figure", report.stdout + report.stderr)

        # loop-b as a playbook stopped mid-run leaves it: its run killed with a journal on the host,
        # nothing on the controller.
        interrupt(tmp, run_dir, "loop-b", head)

        # A second run: nothing that finished runs again, the interrupted run resumes its journal,
        # the failures are tried again.
        before = {h: os.stat(f"{tmp}/remote/{h}/runs/loop/run.log").st_mtime_ns for h in ("loop-a",)}
        fetched = {h: os.stat(f"{run_dir}/{h}/results.json").st_mtime_ns for h in ("loop-a",)}
        second = playbook(args, tmp, "playbook-2.log")
        out2 = second.stdout + second.stderr
        s = status(run_dir, "loop-b")
        check(s["state"] == "ok" and s["resumed"], "loop-b: resumed its journal", json.dumps(s) + out2[-3000:])
        with open(f"{run_dir}/loop-b/results.json") as f:
            resumed = json.load(f)["context"]["flushbench"]["run"].get("resumed_cells", 0)
        check(resumed >= 2, f"loop-b: {resumed} journaled cells kept, the rest measured")
        for h in ("loop-a",):
            check(status(run_dir, h)["state"] == "ok", f"{h}: its status.json keeps the outcome of the run that made it")
            check(os.stat(f"{tmp}/remote/{h}/runs/loop/run.log").st_mtime_ns == before[h]
                  and os.stat(f"{run_dir}/{h}/results.json").st_mtime_ns == fetched[h], f"{h}: not run or fetched again")
        summary2 = open(f"{run_dir}/summary").read()
        check("1 ok, 1 skipped" in summary2 and "4 need attention" in summary2, "the second summary: 1 ok (resumed), 1 skipped, 4 need attention",
              summary2 + out2[-3000:])
        check(status(run_dir, "loop-badvfio")["state"] == "failed", "loop-badvfio was tried again and failed again")
    finally:
        stop(procs)
        if os.environ.get("FLUSHBENCH_KEEP_FLEET_TEST"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
