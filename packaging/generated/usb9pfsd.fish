# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_usb9pfsd_global_optspecs
    string join \n v/verbose id= path= serial= h/help V/version
end

function __fish_usb9pfsd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_usb9pfsd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_usb9pfsd_using_subcommand
    set -l cmd (__fish_usb9pfsd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -l id -d '`forward` only, where p9_fwd.py takes it: the gadget\'s VID:PID (default 1d6b:0109; `any` for every usb9pfs gadget)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -l path -d '`forward` only, where p9_fwd.py takes it: the gadget on this USB port path (e.g. 1-1.2, as `usb9pfsd list` shows it)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -l serial -d '`forward` only: the gadget with this USB serial number' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -s v -l verbose -d 'More log output: -v for debug, -vv for one line per 9P message'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -s h -l help -d 'Print help'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -s V -l version -d 'Print version'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -f -a "run" -d 'Run the daemon in the foreground: serve every configured board'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -f -a "status" -d 'Show the running daemon\'s boards (state, mount, backend, session, counters, errors)'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -f -a "reload" -d 'Make the running daemon re-read its config; boards whose mapping did not change keep their sessions. Fails, changing nothing, if the config is invalid'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -f -a "serve" -d 'Serve a directory or a 9P server to one board, over the config file, until `unserve` or the daemon stops (a reload or hand-over keeps it). Takes effect at the board\'s next mount; a live session is never cut. Only root, the daemon\'s user and group usb9pfsd-admin may'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -f -a "unserve" -d 'Drop a board\'s `serve`: its config entry (if any) decides again, from its next mount'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -f -a "reexec" -d 'Make the running daemon re-execute its binary in place (same PID), handing every board\'s live session to the new image: how a package upgrade takes effect without a board noticing. Fails if any board could not be handed over'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -f -a "list" -d 'List the usb9pfs gadgets plugged in now and where the config sends them'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -f -a "forward" -d 'Serve one gadget with no config file: a drop-in for `p9_fwd.py [--id VID:PID] [--path P] connect [-s HOST] [-p PORT]`'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -f -a "connect" -d 'Serve one gadget with no config file: a drop-in for `p9_fwd.py [--id VID:PID] [--path P] connect [-s HOST] [-p PORT]`'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -f -a "check-config" -d 'Check a config file and print what it maps; warnings for what cannot work. With --probe, then probe every mapped backend'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -f -a "probe" -d 'Do what a board\'s mount will do, without the board: connect to its 9P server, Tversion, Tattach with its aname (its export) and user as confinement rewrites them; say what an error means and what to change. For every entry of the config, or for one --backend'
complete -c usb9pfsd -n "__fish_usb9pfsd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand run" -l config -r -F
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand run" -l control-socket -d 'Listen for `status` and `reload` here (default: [daemon] control_socket, else /run/usb9pfsd/control)' -r -F
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand run" -s v -l verbose -d 'More log output: -v for debug, -vv for one line per 9P message'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand run" -s h -l help -d 'Print help'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand status" -l socket -d 'The daemon\'s control socket' -r -F
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand status" -l json -d 'Print JSON (stable field names, see the man page) instead of a table'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand status" -s v -l verbose -d 'More log output: -v for debug, -vv for one line per 9P message'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand status" -s h -l help -d 'Print help'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand reload" -l socket -d 'The daemon\'s control socket' -r -F
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand reload" -s v -l verbose -d 'More log output: -v for debug, -vv for one line per 9P message'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand reload" -s h -l help -d 'Print help'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand serve" -l backend -d 'The 9P server (host:port, [ipv6]:port, unix:/path). Without it, usb9pfsd starts its own diod for --export DIR at each mount' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand serve" -l export -d 'The directory the board is confined to: on --backend\'s server, or served by a diod usb9pfsd starts (running as the directory\'s owner, every board user squashed to it)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand serve" -l uid -d 'Attach as this uid whatever user the board mounts as (squash)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand serve" -l gid -d 'Attach with this gid (squash)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand serve" -l socket -d 'The daemon\'s control socket' -r -F
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand serve" -l read-only -d 'The board may only read'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand serve" -l json -d 'Print the answer as JSON'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand serve" -s v -l verbose -d 'More log output: -v for debug, -vv for one line per 9P message'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand serve" -s h -l help -d 'Print help'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand unserve" -l socket -d 'The daemon\'s control socket' -r -F
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand unserve" -l json -d 'Print the answer as JSON'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand unserve" -s v -l verbose -d 'More log output: -v for debug, -vv for one line per 9P message'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand unserve" -s h -l help -d 'Print help'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand reexec" -l socket -d 'The daemon\'s control socket' -r -F
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand reexec" -s v -l verbose -d 'More log output: -v for debug, -vv for one line per 9P message'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand reexec" -s h -l help -d 'Print help'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand list" -l config -d 'Config to map boards with (default: /etc/usb9pfsd/config.toml if it exists)' -r -F
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand list" -l json -d 'Print a JSON array instead of a table'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand list" -s v -l verbose -d 'More log output: -v for debug, -vv for one line per 9P message'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand list" -s h -l help -d 'Print help'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand forward" -s s -l server -d '9P server host name or address' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand forward" -s p -l port -d '9P server TCP port' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand forward" -l unix -d 'A 9P server on this unix socket instead of TCP (e.g. /run/diod.sock)' -r -F
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand forward" -l id -d 'Only a gadget with this VID:PID (default 1d6b:0109, as p9_fwd.py; `any` for every usb9pfs gadget). Also accepted before `forward`' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand forward" -l path -d 'Only the gadget on this USB port path (e.g. 1-1.2). Also accepted before `forward`' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand forward" -l serial -d 'Only the gadget with this serial number (with --path: that serial on that port)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand forward" -l buflen -d 'The board\'s usb9pfs buflen (512 to 16777216)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand forward" -l request-timeout -d 'Fail a request (ETIMEDOUT) whose reply has not come after this many seconds, and end the session (default: wait)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand forward" -s v -l verbose -d 'More log output: -v for debug, -vv for one line per 9P message'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand forward" -s h -l help -d 'Print help'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand connect" -s s -l server -d '9P server host name or address' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand connect" -s p -l port -d '9P server TCP port' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand connect" -l unix -d 'A 9P server on this unix socket instead of TCP (e.g. /run/diod.sock)' -r -F
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand connect" -l id -d 'Only a gadget with this VID:PID (default 1d6b:0109, as p9_fwd.py; `any` for every usb9pfs gadget). Also accepted before `forward`' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand connect" -l path -d 'Only the gadget on this USB port path (e.g. 1-1.2). Also accepted before `forward`' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand connect" -l serial -d 'Only the gadget with this serial number (with --path: that serial on that port)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand connect" -l buflen -d 'The board\'s usb9pfs buflen (512 to 16777216)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand connect" -l request-timeout -d 'Fail a request (ETIMEDOUT) whose reply has not come after this many seconds, and end the session (default: wait)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand connect" -s v -l verbose -d 'More log output: -v for debug, -vv for one line per 9P message'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand connect" -s h -l help -d 'Print help'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand check-config" -l aname -d 'The board\'s `mount -o aname=...` (default: the entry\'s export, else none, which diod refuses)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand check-config" -l uname -d 'The user name in the board\'s attach (mount -o uname=...; the kernel\'s default is nobody)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand check-config" -l uid -d 'The uid in the board\'s attach (default: none, as the board\'s kernel sends for its mount; a later attach of one of its users carries theirs)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand check-config" -l probe -d 'Then do what each board\'s mount will do with its server (see `probe`)'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand check-config" -s v -l verbose -d 'More log output: -v for debug, -vv for one line per 9P message'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand probe" -l config -d 'The config whose entries (and plugged boards) to probe' -r -F
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand probe" -l backend -d 'Probe this server instead (host:port, [ipv6]:port or unix:/path)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand probe" -l export -d 'With --backend: the export (as a confined board\'s `export`)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand probe" -l squash-uid -d 'With --backend: attach as this uid (as a board\'s `uid` squash)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand probe" -l aname -d 'The board\'s `mount -o aname=...` (default: the entry\'s export, else none, which diod refuses)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand probe" -l uname -d 'The user name in the board\'s attach (mount -o uname=...; the kernel\'s default is nobody)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand probe" -l uid -d 'The uid in the board\'s attach (default: none, as the board\'s kernel sends for its mount; a later attach of one of its users carries theirs)' -r
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand probe" -l json -d 'Print JSON (one object per probe) instead of text'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand probe" -s v -l verbose -d 'More log output: -v for debug, -vv for one line per 9P message'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand probe" -s h -l help -d 'Print help'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand help; and not __fish_seen_subcommand_from run status reload serve unserve reexec list forward check-config probe help" -f -a "run" -d 'Run the daemon in the foreground: serve every configured board'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand help; and not __fish_seen_subcommand_from run status reload serve unserve reexec list forward check-config probe help" -f -a "status" -d 'Show the running daemon\'s boards (state, mount, backend, session, counters, errors)'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand help; and not __fish_seen_subcommand_from run status reload serve unserve reexec list forward check-config probe help" -f -a "reload" -d 'Make the running daemon re-read its config; boards whose mapping did not change keep their sessions. Fails, changing nothing, if the config is invalid'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand help; and not __fish_seen_subcommand_from run status reload serve unserve reexec list forward check-config probe help" -f -a "serve" -d 'Serve a directory or a 9P server to one board, over the config file, until `unserve` or the daemon stops (a reload or hand-over keeps it). Takes effect at the board\'s next mount; a live session is never cut. Only root, the daemon\'s user and group usb9pfsd-admin may'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand help; and not __fish_seen_subcommand_from run status reload serve unserve reexec list forward check-config probe help" -f -a "unserve" -d 'Drop a board\'s `serve`: its config entry (if any) decides again, from its next mount'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand help; and not __fish_seen_subcommand_from run status reload serve unserve reexec list forward check-config probe help" -f -a "reexec" -d 'Make the running daemon re-execute its binary in place (same PID), handing every board\'s live session to the new image: how a package upgrade takes effect without a board noticing. Fails if any board could not be handed over'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand help; and not __fish_seen_subcommand_from run status reload serve unserve reexec list forward check-config probe help" -f -a "list" -d 'List the usb9pfs gadgets plugged in now and where the config sends them'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand help; and not __fish_seen_subcommand_from run status reload serve unserve reexec list forward check-config probe help" -f -a "forward" -d 'Serve one gadget with no config file: a drop-in for `p9_fwd.py [--id VID:PID] [--path P] connect [-s HOST] [-p PORT]`'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand help; and not __fish_seen_subcommand_from run status reload serve unserve reexec list forward check-config probe help" -f -a "check-config" -d 'Check a config file and print what it maps; warnings for what cannot work. With --probe, then probe every mapped backend'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand help; and not __fish_seen_subcommand_from run status reload serve unserve reexec list forward check-config probe help" -f -a "probe" -d 'Do what a board\'s mount will do, without the board: connect to its 9P server, Tversion, Tattach with its aname (its export) and user as confinement rewrites them; say what an error means and what to change. For every entry of the config, or for one --backend'
complete -c usb9pfsd -n "__fish_usb9pfsd_using_subcommand help; and not __fish_seen_subcommand_from run status reload serve unserve reexec list forward check-config probe help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
