%% The Erlang/OTP comparator of scripts/bench.sh: the figures of
%% tests/bench/ defined as wasm-sup's are, for a gen_server under a
%% supervisor. Each prints one JSON object on standard output.
%%
%% `main/1` runs one figure in a fresh VM; `serve/1` keeps one VM and runs
%% a figure for each line read from standard input ("restart 400"), so that
%% the benchmark can take turns with it round by round: what one turn set
%% up (the supervisor, the ETS table, mnesia's schema) the next reuses.
%%
%%   restart ROUNDS      crash -> ready: a call that crashes the worker
%%                       (one_for_one, state in a public ETS table that
%%                       outlives it), then a call that reads the state,
%%                       answered by the restarted worker after its init.
%%   echo TOTAL SENDERS  64-byte echo calls to one gen_server, SENDERS
%%                       callers each waiting for its reply.
%%   durable TOTAL PLUGINS SENDERS
%%                       counters: each call increments a gen_server's count
%%                       and hands the write to one batching committer, which
%%                       writes all it has waiting to mnesia (disc_copies) in
%%                       one transaction, syncs mnesia's log to disk, and only
%%                       then answers the callers (our pipelined group
%%                       commit: the gen_server takes its next call at once);
%%                       SENDERS callers.
%%   density N           resident memory each idle gen_server adds (N
%%                       workers under a simple_one_for_one supervisor,
%%                       each having handled one call).
-module(wsbench).
%% Both a gen_server and a supervisor (init/1 tells them apart by argument;
%% only one behaviour is declared, since both need init/1).
-behaviour(gen_server).

-export([main/1, serve/1]).
-export([init/1, handle_call/3, handle_cast/2]).
-export([start_worker/1, start_idle/1]).

main([Figure | Args]) ->
    %% As in wasm-sup's in-process figures, nothing is logged per crash.
    ok = logger:set_primary_config(level, none),
    ok = application:set_env(mnesia, dir, "/tmp/wsbench-mnesia-" ++ os:getpid()),
    figure(Figure, Args),
    cleanup(),
    halt(0).

%% Figures read from standard input until it ends; mnesia's files in Dir.
serve(Dir) ->
    ok = logger:set_primary_config(level, none),
    ok = application:set_env(mnesia, dir, Dir),
    serve_loop().

serve_loop() ->
    case io:get_line("") of
        eof -> cleanup(), halt(0);
        {error, _} -> cleanup(), halt(1);
        Line ->
            case string:lexemes(string:trim(Line), " ") of
                [] -> ok;
                [Figure | Args] -> figure(Figure, Args)
            end,
            serve_loop()
    end.

figure(Figure, Args) ->
    Result = run(list_to_atom(Figure), [list_to_integer(A) || A <- Args]),
    io:format("~s~n", [json(Result)]).

cleanup() ->
    case mnesia:system_info(is_running) of
        yes -> {ok, Dir} = application:get_env(mnesia, dir), mnesia:stop(), os:cmd("rm -rf " ++ Dir);
        _ -> ok
    end.

run(restart, [Rounds]) ->
    case ets:info(wsbench_state) of
        undefined ->
            ets:new(wsbench_state, [named_table, public, set]),
            ets:insert(wsbench_state, {count, 41});
        _ -> ok
    end,
    case whereis(wsbench_sup) of
        undefined -> {ok, _} = supervisor:start_link({local, wsbench_sup}, ?MODULE, restart);
        _ -> ok
    end,
    Warm = [crash_and_read() || _ <- lists:seq(1, min(Rounds, 20))],
    _ = Warm,
    Samples = [crash_and_read() || _ <- lists:seq(1, Rounds)],
    spread(Samples);
run(echo, [Total, Senders]) ->
    case gen_server:start({local, wsbench_echo}, ?MODULE, echo, []) of
        {ok, _} -> ok;
        {error, {already_started, _}} -> ok
    end,
    Message = binary:copy(<<"x">>, 64),
    Next = counters:new(1, [atomics]),
    Self = self(),
    Start = erlang:monotonic_time(nanosecond),
    Pids = [spawn_link(fun() -> echo_loop(Next, Total, Message), Self ! {done, self()} end)
            || _ <- lists:seq(1, Senders)],
    [receive {done, P} -> ok end || P <- Pids],
    Seconds = (erlang:monotonic_time(nanosecond) - Start) / 1.0e9,
    #{per_second => Total / Seconds};
run(durable, [Total, Plugins, Senders]) ->
    case mnesia:system_info(is_running) of
        yes -> ok;
        _ ->
            ok = mnesia:create_schema([node()]),
            ok = mnesia:start(),
            {atomic, ok} = mnesia:create_table(kv, [{disc_copies, [node()]}])
    end,
    ok = mnesia:wait_for_tables([kv], 10000),
    Committer = spawn(fun() -> committer() end),
    Counters = [begin
                    {ok, P} = gen_server:start(?MODULE, {counter, I, Committer}, []),
                    P
                end || I <- lists:seq(1, Plugins)],
    Targets = list_to_tuple(Counters),
    Warm = max(1, Total div 10),
    _ = load(Targets, Warm, Senders),
    {Seconds, Latencies} = load(Targets, Total, Senders),
    [exit(P, kill) || P <- [Committer | Counters]],
    maps:merge(#{per_second => Total / Seconds}, spread(Latencies));
run(density, [N]) ->
    {ok, Sup} = supervisor:start_link(?MODULE, idle),
    erlang:garbage_collect(),
    timer:sleep(200),
    Before = rss_kib(),
    Workers = [begin {ok, W} = supervisor:start_child(Sup, [I]), W end || I <- lists:seq(1, N)],
    [1 = gen_server:call(W, hello) || W <- Workers],
    erlang:garbage_collect(),
    timer:sleep(1000),
    After = rss_kib(),
    #{kib_per_instance => (After - Before) / N, rss_kib => After, processes => N}.

%% Total calls spread over Targets from Senders callers; the seconds taken
%% and each call's latency in microseconds.
load(Targets, Total, Senders) ->
    Next = counters:new(1, [atomics]),
    Self = self(),
    Start = erlang:monotonic_time(nanosecond),
    Pids = [spawn_link(fun() -> Self ! {done, self(), call_loop(Next, Total, Targets, [])} end)
            || _ <- lists:seq(1, Senders)],
    Latencies = lists:append([receive {done, P, L} -> L end || P <- Pids]),
    {(erlang:monotonic_time(nanosecond) - Start) / 1.0e9, Latencies}.

call_loop(Next, Total, Targets, Acc) ->
    I = counters:get(Next, 1),
    case I >= Total of
        true -> Acc;
        false ->
            counters:add(Next, 1, 1),
            T0 = erlang:monotonic_time(nanosecond),
            Target = element(I rem tuple_size(Targets) + 1, Targets),
            _ = gen_server:call(Target, hello, infinity),
            call_loop(Next, Total, Targets, [(erlang:monotonic_time(nanosecond) - T0) / 1000.0 | Acc])
    end.

%% Writes everything waiting in one transaction, syncs the log, replies.
committer() ->
    First = receive {write, _, _, _} = W -> W end,
    Batch = [First | drain(255)],
    {atomic, ok} = mnesia:transaction(fun() ->
        lists:foreach(fun({write, _, K, V}) -> mnesia:write({kv, K, V}) end, Batch)
    end),
    ok = disk_log:sync(latest_log),
    [gen_server:reply(From, V) || {write, From, _, V} <- Batch],
    committer().

drain(0) -> [];
drain(N) ->
    receive {write, _, _, _} = W -> [W | drain(N - 1)]
    after 0 -> []
    end.

%% crash -> ready, in microseconds.
crash_and_read() ->
    T0 = erlang:monotonic_time(nanosecond),
    {'EXIT', _} = (catch gen_server:call(wsbench_worker, crash)),
    41 = read(),
    (erlang:monotonic_time(nanosecond) - T0) / 1000.0.

%% The restarted worker may not be registered yet: try again until it is,
%% yielding first. Without the yield the caller spins through its
%% reductions on the supervisor's scheduler and keeps the restart from
%% running: a quarter of the restarts then took milliseconds (p75 1.7 to
%% 2.8 ms, p50 80 to 108 us; with the yield p50 44 to 57 us, p99 134 to
%% 175 us). Our caller does not spin either: its message waits in the
%% mailbox for the new instance.
read() ->
    case catch gen_server:call(wsbench_worker, get) of
        {'EXIT', {noproc, _}} -> erlang:yield(), read();
        {'EXIT', {normal, _}} -> erlang:yield(), read();
        {'EXIT', {killed, _}} -> erlang:yield(), read();
        Count when is_integer(Count) -> Count
    end.

echo_loop(Next, Total, Message) ->
    case counters:get(Next, 1) >= Total of
        true -> ok;
        false ->
            counters:add(Next, 1, 1),
            Message = gen_server:call(wsbench_echo, Message),
            echo_loop(Next, Total, Message)
    end.

spread(Samples) ->
    Sorted = lists:sort(Samples),
    Len = length(Sorted),
    At = fun(Q) -> lists:nth(round((Len - 1) * Q) + 1, Sorted) end,
    #{p50_us => At(0.50), p99_us => At(0.99)}.

rss_kib() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [Line] = [L || L <- binary:split(Status, <<"\n">>, [global]), binary:part(L, 0, min(6, byte_size(L))) =:= <<"VmRSS:">>],
    [_, Kib | _] = binary:split(Line, [<<" ">>, <<"\t">>], [global, trim_all]),
    binary_to_integer(Kib).

%% supervisor callbacks
init(restart) ->
    {ok, {#{strategy => one_for_one, intensity => 1000000000, period => 1},
          [#{id => worker, start => {?MODULE, start_worker, [worker]}}]}};
init(idle) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 10, period => 1},
          [#{id => idle, start => {?MODULE, start_idle, []}}]}};
%% gen_server callbacks
init(worker) ->
    [{count, Count}] = ets:lookup(wsbench_state, count),
    {ok, Count};
init(echo) ->
    {ok, none};
init({idle, _}) ->
    {ok, 0};
init({counter, I, Committer}) ->
    {ok, {I, 0, Committer}}.

start_worker(worker) ->
    gen_server:start_link({local, wsbench_worker}, ?MODULE, worker, []).

start_idle(I) ->
    gen_server:start_link(?MODULE, {idle, I}, []).

handle_call(crash, _From, _State) ->
    exit(crash);
handle_call(get, _From, Count) when is_integer(Count) ->
    {reply, Count, Count};
handle_call(hello, _From, N) when is_integer(N) ->
    {reply, N + 1, N + 1};
handle_call(hello, From, {I, N, Committer}) ->
    %% Pipelined: the next call is taken at once; the committer answers
    %% this one once its write is on disk.
    Committer ! {write, From, I, N + 1},
    {noreply, {I, N + 1, Committer}};
handle_call(Message, _From, none) ->
    {reply, Message, none}.

handle_cast(_, State) ->
    {noreply, State}.

%% A flat map of atoms to numbers as JSON.
json(Map) ->
    Fields = [io_lib:format("\"~s\":~p", [K, V]) || {K, V} <- maps:to_list(Map)],
    ["{", lists:join(",", Fields), "}"].
