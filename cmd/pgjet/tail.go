package main

func runTail(args []string) int { return 2 }
