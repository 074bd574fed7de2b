"""``scripts/portinfo [--run-dir DIR] TASK [NAME...] [-v] [-t OTHER] [--json]``: a task's
port names and rights as the Hurd's utils/portinfo.c prints them::

       257: receive (seqno: 12, qlimit: 16, msgs: 3, send-rights, ns-req) {3/16 queued,
            2 senders blocked, 1 receiver waiting, 4 dead-name requests; pager of object 7}
       301: send (refs: 2) {-> ext2fs, port 45}

Everything Mach has a call for comes from it, on the task's kernel port (from
``machemu_task_for_id`` on host_priv, the Hurd's proc_pid2task): ``mach_port_names``,
``mach_port_type`` (a dead-name request on a send right), ``mach_port_get_refs``,
``mach_port_get_receive_status``, ``mach_port_get_set_status``; what GNU Mach keeps
private (receivers waiting, senders blocked, dead-name requests on a receive right)
from ``mach_port_get_attributes`` (MACH_PORT_RECEIVE_STATUS), and what each name
denotes (the port, who holds its receive right, the kernel object it is) from
``machemu_space_info``.  Without ``-v`` only the right types are shown, as portinfo
does; in braces what machemu adds.

``-t OTHER`` is portinfo's ``--translate``: for each port of TASK, its name in OTHER
("257 => 1033: send ..."), found by port identity without taking any right (the Hurd's
portinfo extracts a send right of each, which here would disturb the translators'
no-senders accounting).
"""

from __future__ import annotations

import sys

from lab.tools.common import CALL_TIMEOUT, Session, ToolError, mach_error, run_tool, tool_parser
from lab.tools.output import print_json, print_table, terminal
from protocol import message as M
from protocol.defs import mach_port as P
from protocol.defs import machemu as X
from protocol.kern_return import MachError

RIGHTS = ((M.MACH_PORT_TYPE_RECEIVE, "receive"), (M.MACH_PORT_TYPE_SEND, "send"),
          (M.MACH_PORT_TYPE_SEND_ONCE, "send-once"), (M.MACH_PORT_TYPE_DEAD_NAME, "dead-name"),
          (M.MACH_PORT_TYPE_PORT_SET, "port-set"))
STATUS_FIELDS = ("pset", "seqno", "mscount", "qlimit", "msgcount", "sorights", "srights",
                 "pdrequest", "nsrequest")  # mach_port_status_t, in order
ONLY = {"receive": M.MACH_PORT_TYPE_RECEIVE, "send": M.MACH_PORT_TYPE_SEND,
        "send_once": M.MACH_PORT_TYPE_SEND_ONCE, "dead_names": M.MACH_PORT_TYPE_DEAD_NAME,
        "port_sets": M.MACH_PORT_TYPE_PORT_SET}


def rights_of(ptype: int) -> list[str]:
    return [n for bit, n in RIGHTS if ptype & bit]


def space_identities(session: Session, task_port: int) -> dict[int, dict]:
    """machemu_space_info, every page: {name: what it denotes}."""
    return {r["name"]: r for info in session.pages(X.machemu_space_info, task_port,
                                                    X.SPACE_INFO_MAX)
            for r in info["names"]}


def port_names(session: Session, task_port: int) -> list[tuple[int, int]]:
    """mach_port_names: (name, type) of every name of the task, in name order."""
    try:
        names, types = P.mach_port_names(task_port, timeout=CALL_TIMEOUT, rt=session.rt)
    except MachError as e:
        raise mach_error(e, "mach_port_names") from None
    return sorted(zip(names, types))


def port_row(session: Session, task_port: int, name: int, ptype: int,
             ident: dict | None) -> dict:
    """Everything portinfo shows of ``name`` (of type ``ptype``) in the task: rights,
    user references, receive status and queue, port-set members, what it denotes.
    A name that went away meanwhile is marked ``gone`` (its Mach error code)."""
    rt = session.rt

    def call(routine, *args):
        return routine(task_port, name, *args, timeout=CALL_TIMEOUT, rt=rt)

    row = {"name": name, "type": ptype, "rights": rights_of(ptype), "refs": {},
           "identity": ident}
    try:
        if ptype & (M.MACH_PORT_TYPE_SEND | M.MACH_PORT_TYPE_SEND_ONCE
                    | M.MACH_PORT_TYPE_DEAD_NAME):
            row["dnrequest"] = bool(call(P.mach_port_type) & M.MACH_PORT_TYPE_DNREQUEST)
        if ptype & M.MACH_PORT_TYPE_SEND:
            row["refs"]["send"] = call(P.mach_port_get_refs, M.MACH_PORT_RIGHT_SEND)
        if ptype & M.MACH_PORT_TYPE_DEAD_NAME:
            row["refs"]["dead-name"] = call(P.mach_port_get_refs, M.MACH_PORT_RIGHT_DEAD_NAME)
        if ptype & M.MACH_PORT_TYPE_RECEIVE:
            st = dict(zip(STATUS_FIELDS, call(P.mach_port_get_receive_status)))
            attrs = call(X.mach_port_get_attributes, X.MACH_PORT_RECEIVE_STATUS)
            st.update(waiting_receivers=attrs["waiting_receivers"],
                      blocked_senders=attrs["blocked_senders"],
                      send_rights=attrs["srights"],
                      dnrequests=attrs.get("dnrequests"))
            row["receive"] = st
        if ptype & M.MACH_PORT_TYPE_PORT_SET:
            row["members"] = sorted(call(P.mach_port_get_set_status))
    except MachError as e:
        row["gone"] = e.code
    return row


def fmt_name(n: int, hexa: bool) -> str:
    return f"{n:#6x}" if hexa else f"{n:6d}"


def identity_text(row: dict) -> str:
    """What the name denotes, as machemu adds it in braces ("" if nothing to add)."""
    ident = row.get("identity") or {}
    if ident.get("what") != "port":
        return ""
    parts = []
    if not row["type"] & M.MACH_PORT_TYPE_RECEIVE:
        holder = ident["receiver_name"] or "(in transit)"
        parts.append(f"-> {holder}, port {ident['id']}")
    if ident.get("kotype"):
        parts.append(ident["label"] or ident["kotype"])
    elif ident.get("object"):
        parts.append(f"pager of object {ident['object']}")
    return ", ".join(parts)


def line(row: dict, hexa: bool, details: bool) -> str:
    """One name as portinfo prints it (``details``: portinfo -v), machemu's additions
    in braces."""
    out = fmt_name(row["name"], hexa) + ": " + ", ".join(row["rights"])
    if not details:
        return out
    st = row.get("receive")
    if st is not None:
        parts = []
        if st["pset"]:
            parts.append(f"port-set: {row_name(st['pset'], hexa)}")
        parts.append(f"seqno: {st['seqno']}")
        if st["mscount"]:
            parts.append(f"ms-count: {st['mscount']}")
        if st["qlimit"] != M.MACH_PORT_QLIMIT_DEFAULT:
            parts.append(f"qlimit: {st['qlimit']}")
        if st["msgcount"]:
            parts.append(f"msgs: {st['msgcount']}")
        text = ", ".join(parts)
        text += "".join(s for s, on in ((", send-rights", st["srights"]),
                                        (", pd-req", st["pdrequest"]),
                                        (", ns-req", st["nsrequest"])) if on)
        out += f" ({text})"
    if "send" in row["refs"]:
        out += f" (refs: {row['refs']['send']})"
    if "dead-name" in row["refs"]:
        out += f" (refs: {row['refs']['dead-name']})"
    if "members" in row:
        m = row["members"]
        out += " (" + ", ".join(row_name(x, hexa) for x in m) + ")" if m else " (empty)"
    extra = []
    if st is not None:
        extra.append(f"{st['msgcount']}/{st['qlimit']} queued")
        if st["blocked_senders"]:
            extra.append(f"{st['blocked_senders']} senders blocked")
        if st["waiting_receivers"]:
            extra.append(f"{st['waiting_receivers']} receivers waiting")
        if st.get("dnrequests"):
            extra.append(f"{st['dnrequests']} dead-name requests")
    if row.get("dnrequest"):
        extra.append("dead-name notification requested")
    ident = identity_text(row)
    text = ", ".join(extra) + ("; " if extra and ident else "") + ident
    return out + (f" {{{text}}}" if text else "")


def row_name(n: int, hexa: bool) -> str:
    return f"{n:#x}" if hexa else str(n)


def table_row(row: dict, hexa: bool, xlated: int | None = None) -> list[str]:
    """The row of the terminal table."""
    st = row.get("receive") or {}
    refs = ",".join(str(v) for v in row["refs"].values())
    queue = f"{st['msgcount']}/{st['qlimit']}" if st else ""
    reqs = ",".join(n for n, on in (("ns", st.get("nsrequest")), ("pd", st.get("pdrequest")),
                                    ("dn", row.get("dnrequest"))) if on)
    if st.get("dnrequests"):
        reqs += ("," if reqs else "") + f"{st['dnrequests']} dn"
    members = " ".join(row_name(x, hexa) for x in row.get("members", []))
    out = [row_name(row["name"], hexa), ",".join(row["rights"]), refs, queue,
           str(st.get("blocked_senders", "")), str(st.get("waiting_receivers", "")), reqs,
           row_name(st["pset"], hexa) if st.get("pset") else members, identity_text(row)]
    return ([row_name(xlated, hexa)] if xlated is not None else []) + out


HEADERS = ["NAME", "RIGHTS", "REFS", "QUEUE", "BLOCKED", "WAITING", "REQUESTS",
           "SET/MEMBERS", "WHAT"]


def translate(from_ids: dict[int, dict], from_names: list[tuple[int, int]],
              to_ids: dict[int, dict], to_names: list[tuple[int, int]]) -> dict[int, int]:
    """portinfo -t: {name in FROM: name of the same port in TO}, for FROM's receive and
    send rights; as port_name_xlator_xlate, a receive right translates to a send right
    and a send right to a send or receive right."""
    by_port: dict[int, list[tuple[int, int]]] = {}
    for n, t in to_names:
        ident = to_ids.get(n)
        if ident and ident["what"] == "port":
            by_port.setdefault(ident["id"], []).append((n, t))
    out = {}
    for n, t in from_names:
        ident = from_ids.get(n)
        if not ident or ident["what"] != "port":
            continue
        if t & M.MACH_PORT_TYPE_RECEIVE:
            valid = M.MACH_PORT_TYPE_SEND
        elif t & M.MACH_PORT_TYPE_SEND:
            valid = M.MACH_PORT_TYPE_SEND | M.MACH_PORT_TYPE_RECEIVE
        else:
            continue
        for n2, t2 in by_port.get(ident["id"], ()):
            if t2 & valid:
                out[n] = n2
                break
    return out


def parser():
    ap = tool_parser(
        "portinfo", "Show information about the port NAMEs (default all) of task TASK.",
        "OTHER likewise.  NAMEs may be given in hexadecimal (0x...).  With --translate "
        "only the ports common to both tasks are listed.", task=True)
    ap.add_argument("names", nargs="*", metavar="NAME")
    ap.add_argument("--verbose", "-v", action="store_true",
                    help="give more detailed information")
    ap.add_argument("--hex-names", "-x", action="store_true",
                    help="show port names in hexadecimal")
    g = ap.add_argument_group("selecting which names to show")
    g.add_argument("--receive", "-r", action="store_true", help="ports with receive rights")
    g.add_argument("--send", "-s", action="store_true", help="ports with send rights")
    g.add_argument("--send-once", "-o", action="store_true",
                   help="ports with send-once rights")
    g.add_argument("--dead-names", "-d", action="store_true", help="dead names")
    g.add_argument("--port-sets", "-p", action="store_true", help="port sets")
    ap.add_argument("--translate", "-t", metavar="OTHER",
                    help="translate port names to task OTHER")
    return ap


def selected(args, names: list[tuple[int, int]]) -> list[tuple[int, int]]:
    only = 0
    for attr, bit in ONLY.items():
        if getattr(args, attr):
            only |= bit
    only = only or ~0
    wanted = None
    if args.names:
        try:
            wanted = {int(n, 0) for n in args.names}
        except ValueError:
            raise ToolError(f"invalid port name in {args.names}") from None
        missing = wanted - {n for n, _ in names}
        for n in sorted(missing):
            print(f"portinfo: {n}: KERN_INVALID_NAME", file=sys.stderr)
    return [(n, t) for n, t in names if t & only and (wanted is None or n in wanted)]


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    hexa = args.hex_names
    with Session(args.run_dir, "portinfo", privileged=True) as session:
        task, port = session.task(args.task)
        ids = space_identities(session, port)
        names = selected(args, port_names(session, port))
        rows, xlate, other = [], None, None
        if args.translate:
            other, oport = session.task(args.translate)
            onames = port_names(session, oport)
            oids = space_identities(session, oport)
            xlate = translate(ids, names, oids, onames)
            otypes = dict(onames)
            for n, _ in names:
                if n in xlate:
                    r = port_row(session, oport, xlate[n], otypes[xlate[n]],
                                 oids.get(xlate[n]))
                    r["from_name"] = n
                    rows.append(r)
        else:
            rows = [port_row(session, port, n, t, ids.get(n)) for n, t in names]
    gone = [r for r in rows if "gone" in r]
    rows = [r for r in rows if "gone" not in r]
    if args.json:
        print_json({"task": task, "translate": other, "names": rows,
                    "total_names": len(ids), "gone": len(gone)})
        return 0
    if gone:  # reply ports and the like, made and used up while we looked
        print(f"portinfo: {len(gone)} names went away while being listed",
              file=sys.stderr)
    if terminal():
        headers = (["FROM"] if xlate is not None else []) + HEADERS
        title = f"{task['name']} (task {task['id']}, pid {task['pid']})" + (
            f" => {other['name']} (task {other['id']})" if other else "")
        print_table(headers, [table_row(r, hexa, r.get("from_name")) for r in rows],
                    title=title)
        return 0
    for r in rows:
        prefix = (fmt_name(r["from_name"], hexa) + " => ") if "from_name" in r else ""
        print(prefix + line(r, hexa, args.verbose))
    return 0


def cli(argv=None) -> int:
    """scripts/portinfo."""
    return run_tool("portinfo", main, argv)
