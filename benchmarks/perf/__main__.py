from benchmarks.perf.summary import main

main()
