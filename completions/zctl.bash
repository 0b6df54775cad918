# bash completion for zctl                                  -*- shell-script -*-
#
# Install: copy to /usr/share/bash-completion/completions/zctl, or load it in
# the current shell with:  source <(zctl completion bash)
#
# Self-contained: it does not need the bash-completion package's helpers.

# Prints the options of a command path ("" = top level) that take a value.
# The global --log-level and --log-format are accepted after any command too.
_zctl_options_with_value() {
    # One line: callers match " $word " against the output.
    printf '%s ' '--log-level --log-format'
    case $1 in
        serve) echo '-c --config --id --data-dir --admin --mesh --raft --join --join-token-file' ;;
        watch) echo '--node --namespace --type --since --count -o --output --token-file --ca-file --cert-file --key-file' ;;
        probe) echo '--mode --connections --concurrency --expect-grace --tolerance --timeout -o --output --node-id --cluster-id --token-file --raft-addr --ca-file --cert-file --key-file --server-name --seed' ;;
        'plugins list') echo '-c --config' ;;
        'sink test') echo '-c --config --id --data-dir --count --timeout -o --output' ;;
        'cluster list' | 'cluster add' | 'cluster remove' | 'cluster transfer-leadership')
            echo '--node --token-file --ca-file --cert-file --key-file -o --output' ;;
    esac
}

# Prints every option of a command path.
_zctl_options() {
    case $1 in
        '') echo '--help --version --log-level --log-format' ;;
        serve) echo '--help --config --id --data-dir --admin --mesh --raft --bootstrap --join --join-token-file --log-level --log-format' ;;
        watch) echo '--help --node --namespace --type --since --count --output --token-file --ca-file --cert-file --key-file --log-level --log-format' ;;
        probe) echo '--help --mode --connections --concurrency --expect-grace --tolerance --timeout --output --node-id --cluster-id --token-file --raft-addr --tls --ca-file --cert-file --key-file --server-name --insecure --seed --log-level --log-format' ;;
        'plugins list') echo '--help --config --log-level --log-format' ;;
        'sink test') echo '--help --config --id --data-dir --count --timeout --output --log-level --log-format' ;;
        'cluster list' | 'cluster add' | 'cluster remove' | 'cluster transfer-leadership')
            echo '--help --node --token-file --ca-file --cert-file --key-file --output --log-level --log-format' ;;
        *) echo '--help --log-level --log-format' ;;
    esac
}

# Sets COMPREPLY to the values of option $1 that start with $2.
_zctl_option_values() {
    local opt=$1 cur=$2
    case $opt in
        --log-level)
            COMPREPLY=($(compgen -W 'trace debug info warn error critical off' -- "$cur")) ;;
        --log-format)
            COMPREPLY=($(compgen -W 'text json' -- "$cur")) ;;
        -o | --output)
            COMPREPLY=($(compgen -W 'table json' -- "$cur")) ;;
        --mode)
            COMPREPLY=($(compgen -W 'idle tls hello partial bad-magic bad-version oversize garbage join' -- "$cur")) ;;
        --expect-grace | --tolerance | --timeout)
            COMPREPLY=($(compgen -W '500ms 1s 5s 30s' -- "$cur")) ;;
        --namespace)
            COMPREPLY=($(compgen -W 'cluster connection node sink' -- "$cur")) ;;
        --type)
            COMPREPLY=($(compgen -W 'started stopping unhealthy recovered dropped
                state.has_leader state.is_leaderless leadership.gained leadership.lost
                peer.connected peer.disconnected members.changed
                stray rejected protocol_error flood' -- "$cur")) ;;
        -c | --config | --token-file | --join-token-file | --ca-file | --cert-file | --key-file)
            _zctl_files "$cur" ;;
        --data-dir)
            _zctl_dirs "$cur" ;;
        *)
            COMPREPLY=() ;;  # free-form: --id, --admin, --mesh, --raft, --join, --node, --since, --count
    esac
}

_zctl_files() {
    compopt -o filenames 2>/dev/null
    local IFS=$'\n'
    COMPREPLY=($(compgen -f -- "$1"))
}

_zctl_dirs() {
    compopt -o filenames 2>/dev/null
    local IFS=$'\n'
    COMPREPLY=($(compgen -d -- "$1"))
}

_zctl() {
    local cur=${COMP_WORDS[COMP_CWORD]-}
    local prev=''
    (( COMP_CWORD > 0 )) && prev=${COMP_WORDS[COMP_CWORD - 1]-}
    COMPREPLY=()

    # Walk the words before the cursor: find the command path ("serve",
    # "plugins list", ...) and count positional arguments, skipping option
    # values ("--output json", "--output=json", "--output = json").
    local path='' npos=0 i=1 w
    while (( i < COMP_CWORD )); do
        w=${COMP_WORDS[i]}
        if [[ $w == -* ]]; then
            if [[ $w != *=* && " $(_zctl_options_with_value "$path") " == *" $w "* ]]; then
                if [[ ${COMP_WORDS[i + 1]-} == '=' ]]; then
                    (( i += 2 ))
                else
                    (( i += 1 ))
                fi
            elif [[ ${COMP_WORDS[i + 1]-} == '=' ]]; then
                (( i += 2 ))  # --opt=value split by COMP_WORDBREAKS
            fi
        elif [[ $w != '=' ]]; then
            case "$path:$w" in
                :serve | :watch | :probe | :cluster | :plugins | :sink | :config | :completion | :version) path=$w ;;
                cluster:list | cluster:add | cluster:remove | cluster:transfer-leadership) path="cluster $w" ;;
                plugins:list | plugins:info) path="plugins $w" ;;
                sink:test) path="sink $w" ;;
                config:check) path="config $w" ;;
                *) npos=$((npos + 1)) ;;
            esac
        fi
        (( i++ ))
    done

    # Completing the value of an option?
    local opt=''
    if [[ $cur == '=' && $prev == -* ]]; then
        opt=$prev cur=''
    elif [[ $prev == '=' ]] && (( COMP_CWORD > 1 )); then
        opt=${COMP_WORDS[COMP_CWORD - 2]-}
    elif [[ $cur == --*=* ]]; then
        # '=' is not a word break here: complete "--opt=value" as one word.
        opt=${cur%%=*}
        _zctl_option_values "$opt" "${cur#*=}"
        local k
        for k in "${!COMPREPLY[@]}"; do COMPREPLY[k]="$opt=${COMPREPLY[k]}"; done
        return 0
    elif [[ " $(_zctl_options_with_value "$path") " == *" $prev "* ]]; then
        opt=$prev
    fi
    if [[ -n $opt ]]; then
        _zctl_option_values "$opt" "$cur"
        return 0
    fi

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_zctl_options "$path")" -- "$cur"))
        return 0
    fi

    case $path in
        '')
            COMPREPLY=($(compgen -W 'serve watch probe cluster plugins sink config completion version' -- "$cur")) ;;
        cluster)
            COMPREPLY=($(compgen -W 'list add remove transfer-leadership' -- "$cur")) ;;
        plugins)
            COMPREPLY=($(compgen -W 'list info' -- "$cur")) ;;
        sink)
            COMPREPLY=($(compgen -W 'test' -- "$cur")) ;;
        config)
            COMPREPLY=($(compgen -W 'check' -- "$cur")) ;;
        completion)
            (( npos == 0 )) && COMPREPLY=($(compgen -W 'bash zsh fish' -- "$cur")) ;;
        'plugins info' | 'config check')
            (( npos == 0 )) && _zctl_files "$cur" ;;
        'sink test' | 'cluster add' | 'cluster remove')
            # NAME (a sink of the config) or ID (a node id): nothing to offer for it.
            (( npos > 0 )) && COMPREPLY=($(compgen -W "$(_zctl_options "$path")" -- "$cur")) ;;
        serve | watch | probe | 'plugins list' | 'cluster list' | 'cluster transfer-leadership')
            COMPREPLY=($(compgen -W "$(_zctl_options "$path")" -- "$cur")) ;;
    esac
    return 0
}

complete -F _zctl zctl
