package main

func runBench(args []string) int { return 2 }
