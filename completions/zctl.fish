# fish completion for zctl
#
# Install: copy to ~/.config/fish/completions/zctl.fish (or the system's
# vendor_completions.d), or load it in the current shell with:
#   zctl completion fish | source

# Succeeds when the command line before the cursor is at command path $argv[1]
# ("" = top level, "serve", "plugins info", ...) and, when $argv[2] is given,
# has exactly that many positional arguments after the path.
function __zctl_at
    set -l words (commandline -opc)
    set -e words[1]
    set -l path ''
    set -l npos 0
    set -l skip 0
    for w in $words
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $w
            case --log-level --log-format -c --config --id --data-dir --admin --mesh --raft --join --join-token-file --node --namespace --type --since --count -o --output --token-file --mode --connections --concurrency --expect-grace --tolerance --timeout --node-id --cluster-id --raft-addr --ca-file --cert-file --key-file --server-name --seed
                set skip 1
            case '-*'
                # a flag, or --option=value
            case '*'
                switch "$path:$w"
                    case :serve :watch :probe :cluster :plugins :sink :config :completion :version
                        set path $w
                    case cluster:list cluster:add cluster:remove cluster:transfer-leadership
                        set path "cluster $w"
                    case plugins:list plugins:info
                        set path "plugins $w"
                    case sink:test
                        set path "sink $w"
                    case config:check
                        set path "config $w"
                    case '*'
                        set npos (math $npos + 1)
                end
        end
    end
    test "$path" = "$argv[1]"; or return 1
    if set -q argv[2]
        test $npos -eq $argv[2]; or return 1
    end
    return 0
end

# No file names unless a command or option asks for them.
complete -c zctl -f

# Top level
complete -c zctl -n '__zctl_at ""' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at ""' -l version -d 'Print the version and exit'
complete -c zctl -l log-level -x -a 'trace debug info warn error critical off' -d 'Log level on stderr'
complete -c zctl -l log-format -x -a 'text json' -d 'Log format on stderr'
complete -c zctl -n '__zctl_at ""' -a serve -d 'Run a controller node'
complete -c zctl -n '__zctl_at ""' -a watch -d 'Stream events from a node'
complete -c zctl -n '__zctl_at ""' -a probe -d 'Test how a node treats mesh connections that stop early'
complete -c zctl -n '__zctl_at ""' -a cluster -d 'Show and change the members of the cluster'
complete -c zctl -n '__zctl_at ""' -a plugins -d 'List and inspect sink plugins'
complete -c zctl -n '__zctl_at ""' -a sink -d 'Send test events through a configured sink'
complete -c zctl -n '__zctl_at ""' -a config -d 'Work with configuration files'
complete -c zctl -n '__zctl_at ""' -a completion -d 'Print the shell completion script'
complete -c zctl -n '__zctl_at ""' -a version -d 'Print the version and the plugin ABI version'

# zctl serve
complete -c zctl -n '__zctl_at serve' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at serve' -s c -l config -r -F -d 'YAML config file'
complete -c zctl -n '__zctl_at serve' -l id -x -d 'Node id'
complete -c zctl -n '__zctl_at serve' -l data-dir -x -a '(__fish_complete_directories)' -d 'Data directory'
complete -c zctl -n '__zctl_at serve' -l admin -x -d 'Admin API listen address HOST:PORT'
complete -c zctl -n '__zctl_at serve' -l mesh -x -d 'Mesh port listen address HOST:PORT'
complete -c zctl -n '__zctl_at serve' -l raft -x -d 'Raft transport address, IPv4 HOST:PORT'
complete -c zctl -n '__zctl_at serve' -l bootstrap -d 'Start a new cluster with this node as its only voter'
complete -c zctl -n '__zctl_at serve' -l join -x -d 'Join through the mesh port HOST:PORT of a member'
complete -c zctl -n '__zctl_at serve' -l join-token-file -r -F -d 'File holding the cluster join token'

# zctl watch
complete -c zctl -n '__zctl_at watch' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at watch' -l node -x -a 'http://127.0.0.1:6280' -d 'Admin API URL of the node'
complete -c zctl -n '__zctl_at watch' -l namespace -x -a 'cluster connection node sink' -d 'Only this namespace (repeatable)'
complete -c zctl -n '__zctl_at watch' -l type -x -a 'started stopping unhealthy recovered dropped state.has_leader state.is_leaderless leadership.gained leadership.lost peer.connected peer.disconnected members.changed stray rejected protocol_error flood' -d 'Only event types matching this glob (repeatable)'
complete -c zctl -n '__zctl_at watch' -l since -x -d 'Replay every event after this seq'
complete -c zctl -n '__zctl_at watch' -l count -x -d 'Exit after N events'
complete -c zctl -n '__zctl_at watch' -s o -l output -x -a 'table json' -d 'Output format'
complete -c zctl -n '__zctl_at watch' -l token-file -r -F -d 'File holding the admin API bearer token'
complete -c zctl -n '__zctl_at watch' -l ca-file -r -F -d 'https: the CA that signed the node certificate'
complete -c zctl -n '__zctl_at watch' -l cert-file -r -F -d 'https: this client certificate'
complete -c zctl -n '__zctl_at watch' -l key-file -r -F -d 'https: the key of --cert-file'

# zctl probe
complete -c zctl -n '__zctl_at probe' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at probe 0' -a '127.0.0.1:6262' -d 'Mesh port of the node HOST:PORT'
complete -c zctl -n '__zctl_at probe' -l mode -x -a 'idle tls hello partial bad-magic bad-version oversize garbage join' -d 'Where each connection stops'
complete -c zctl -n '__zctl_at probe' -l connections -x -d 'Connections to open in all'
complete -c zctl -n '__zctl_at probe' -l concurrency -x -d 'Connections open at the same time'
complete -c zctl -n '__zctl_at probe' -l expect-grace -x -a '30s 5s 1s' -d 'Grace period the node should apply'
complete -c zctl -n '__zctl_at probe' -l tolerance -x -a '1s 500ms' -d 'How much later a close may come'
complete -c zctl -n '__zctl_at probe' -l timeout -x -d 'Give up on a connection after this long'
complete -c zctl -n '__zctl_at probe' -s o -l output -x -a 'table json' -d 'Output format'
complete -c zctl -n '__zctl_at probe' -l node-id -x -d 'Node id sent in hello'
complete -c zctl -n '__zctl_at probe' -l cluster-id -x -d 'Cluster id sent in hello'
complete -c zctl -n '__zctl_at probe' -l token-file -r -F -d 'File holding the join token'
complete -c zctl -n '__zctl_at probe' -l raft-addr -x -d 'Raft address sent in join'
complete -c zctl -n '__zctl_at probe' -l tls -d 'Wrap every connection in TLS'
complete -c zctl -n '__zctl_at probe' -l ca-file -r -F -d 'Verify the node certificate against these CAs'
complete -c zctl -n '__zctl_at probe' -l cert-file -r -F -d 'Client certificate (PEM)'
complete -c zctl -n '__zctl_at probe' -l key-file -r -F -d 'Private key of the client certificate'
complete -c zctl -n '__zctl_at probe' -l server-name -x -d 'Name sent as SNI and verified'
complete -c zctl -n '__zctl_at probe' -l insecure -d 'Do not verify the node certificate'
complete -c zctl -n '__zctl_at probe' -l seed -x -d 'Seed of the garbage bytes'

# zctl cluster
complete -c zctl -n '__zctl_at cluster' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at cluster' -a list -d 'Show state, term, leader, members and connectivity'
complete -c zctl -n '__zctl_at cluster' -a add -d 'Authorize a node id to join through the mesh'
complete -c zctl -n '__zctl_at cluster' -a remove -d 'Remove a member from the cluster'
complete -c zctl -n '__zctl_at cluster' -a transfer-leadership -d 'Hand leadership to another voter'
complete -c zctl -n '__zctl_at "cluster list"' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at "cluster list"' -l node -x -a 'http://127.0.0.1:6280' -d 'Admin API URL of the node to ask'
complete -c zctl -n '__zctl_at "cluster list"' -l token-file -r -F -d 'File holding the admin API bearer token'
complete -c zctl -n '__zctl_at "cluster list"' -l ca-file -r -F -d 'https: the CA that signed the node certificate'
complete -c zctl -n '__zctl_at "cluster list"' -l cert-file -r -F -d 'https: this client certificate'
complete -c zctl -n '__zctl_at "cluster list"' -l key-file -r -F -d 'https: the key of --cert-file'
complete -c zctl -n '__zctl_at "cluster list"' -s o -l output -x -a 'table json' -d 'Output format'
complete -c zctl -n '__zctl_at "cluster add"' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at "cluster add"' -l node -x -a 'http://127.0.0.1:6280' -d 'Admin API URL of the node to ask'
complete -c zctl -n '__zctl_at "cluster add"' -l token-file -r -F -d 'File holding the admin API bearer token'
complete -c zctl -n '__zctl_at "cluster add"' -l ca-file -r -F -d 'https: the CA that signed the node certificate'
complete -c zctl -n '__zctl_at "cluster add"' -l cert-file -r -F -d 'https: this client certificate'
complete -c zctl -n '__zctl_at "cluster add"' -l key-file -r -F -d 'https: the key of --cert-file'
complete -c zctl -n '__zctl_at "cluster add"' -s o -l output -x -a 'table json' -d 'Output format'
complete -c zctl -n '__zctl_at "cluster remove"' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at "cluster remove"' -l node -x -a 'http://127.0.0.1:6280' -d 'Admin API URL of the node to ask'
complete -c zctl -n '__zctl_at "cluster remove"' -l token-file -r -F -d 'File holding the admin API bearer token'
complete -c zctl -n '__zctl_at "cluster remove"' -l ca-file -r -F -d 'https: the CA that signed the node certificate'
complete -c zctl -n '__zctl_at "cluster remove"' -l cert-file -r -F -d 'https: this client certificate'
complete -c zctl -n '__zctl_at "cluster remove"' -l key-file -r -F -d 'https: the key of --cert-file'
complete -c zctl -n '__zctl_at "cluster remove"' -s o -l output -x -a 'table json' -d 'Output format'
complete -c zctl -n '__zctl_at "cluster transfer-leadership"' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at "cluster transfer-leadership"' -l node -x -a 'http://127.0.0.1:6280' -d 'Admin API URL of the node to ask'
complete -c zctl -n '__zctl_at "cluster transfer-leadership"' -l token-file -r -F -d 'File holding the admin API bearer token'
complete -c zctl -n '__zctl_at "cluster transfer-leadership"' -l ca-file -r -F -d 'https: the CA that signed the node certificate'
complete -c zctl -n '__zctl_at "cluster transfer-leadership"' -l cert-file -r -F -d 'https: this client certificate'
complete -c zctl -n '__zctl_at "cluster transfer-leadership"' -l key-file -r -F -d 'https: the key of --cert-file'
complete -c zctl -n '__zctl_at "cluster transfer-leadership"' -s o -l output -x -a 'table json' -d 'Output format'

# zctl plugins
complete -c zctl -n '__zctl_at plugins' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at plugins' -a list -d 'List the plugins found in plugins.path'
complete -c zctl -n '__zctl_at plugins' -a info -d 'Load one plugin file and show its descriptor'
complete -c zctl -n '__zctl_at "plugins list"' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at "plugins list"' -s c -l config -r -F -d 'Take plugins.path from this config'
complete -c zctl -n '__zctl_at "plugins info"' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at "plugins info" 0' -F -d 'Plugin file (.so)'

# zctl sink
complete -c zctl -n '__zctl_at sink' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at sink' -a test -d 'Send synthetic events through one sink and report delivery'
complete -c zctl -n '__zctl_at "sink test"' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at "sink test"' -s c -l config -r -F -d 'YAML config file'
complete -c zctl -n '__zctl_at "sink test"' -l id -x -d 'Node id, event_src_id of the events'
complete -c zctl -n '__zctl_at "sink test"' -l data-dir -x -a '(__fish_complete_directories)' -d 'Data directory, for the default sink'
complete -c zctl -n '__zctl_at "sink test"' -l count -x -d 'Events to send'
complete -c zctl -n '__zctl_at "sink test"' -l timeout -x -a '30s 10s 5s' -d 'How long to wait for delivery'
complete -c zctl -n '__zctl_at "sink test"' -s o -l output -x -a 'table json' -d 'Output format'

# zctl config
complete -c zctl -n '__zctl_at config' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at config' -a check -d 'Validate a config file'
complete -c zctl -n '__zctl_at "config check"' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at "config check" 0' -F -d 'YAML config file'

# zctl completion
complete -c zctl -n '__zctl_at completion' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at completion 0' -a 'bash zsh fish' -d 'Shell'

# zctl version
complete -c zctl -n '__zctl_at version' -s h -l help -d 'Print help and exit'
