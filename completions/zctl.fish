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
            case --log-level --log-format -c --config --id --data-dir --admin --node --namespace --type --since --count -o --output --token-file
                set skip 1
            case '-*'
                # a flag, or --option=value
            case '*'
                switch "$path:$w"
                    case :serve :watch :plugins :config :completion :version
                        set path $w
                    case plugins:list plugins:info
                        set path "plugins $w"
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
complete -c zctl -n '__zctl_at ""' -a plugins -d 'List and inspect sink plugins'
complete -c zctl -n '__zctl_at ""' -a config -d 'Work with configuration files'
complete -c zctl -n '__zctl_at ""' -a completion -d 'Print the shell completion script'
complete -c zctl -n '__zctl_at ""' -a version -d 'Print the version and the plugin ABI version'

# zctl serve
complete -c zctl -n '__zctl_at serve' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at serve' -s c -l config -r -F -d 'YAML config file'
complete -c zctl -n '__zctl_at serve' -l id -x -d 'Node id'
complete -c zctl -n '__zctl_at serve' -l data-dir -x -a '(__fish_complete_directories)' -d 'Data directory'
complete -c zctl -n '__zctl_at serve' -l admin -x -d 'Admin API listen address HOST:PORT'

# zctl watch
complete -c zctl -n '__zctl_at watch' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at watch' -l node -x -a 'http://127.0.0.1:6280' -d 'Admin API URL of the node'
complete -c zctl -n '__zctl_at watch' -l namespace -x -a 'cluster connection node sink' -d 'Only this namespace (repeatable)'
complete -c zctl -n '__zctl_at watch' -l type -x -a 'started stopping unhealthy recovered dropped state.has_leader state.is_leaderless leadership.gained leadership.lost peer.connected peer.disconnected members.changed stray rejected protocol_error flood' -d 'Only event types matching this glob (repeatable)'
complete -c zctl -n '__zctl_at watch' -l since -x -d 'Replay every event after this seq'
complete -c zctl -n '__zctl_at watch' -l count -x -d 'Exit after N events'
complete -c zctl -n '__zctl_at watch' -s o -l output -x -a 'table json' -d 'Output format'
complete -c zctl -n '__zctl_at watch' -l token-file -r -F -d 'File holding the admin API bearer token'

# zctl plugins
complete -c zctl -n '__zctl_at plugins' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at plugins' -a list -d 'List the plugins found in plugins.path'
complete -c zctl -n '__zctl_at plugins' -a info -d 'Load one plugin file and show its descriptor'
complete -c zctl -n '__zctl_at "plugins list"' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at "plugins list"' -s c -l config -r -F -d 'Take plugins.path from this config'
complete -c zctl -n '__zctl_at "plugins info"' -s h -l help -d 'Print help and exit'
complete -c zctl -n '__zctl_at "plugins info" 0' -F -d 'Plugin file (.so)'

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
