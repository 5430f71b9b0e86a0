// Command pgjet is the operator tool: demo, tail.
package main

func main() {}
