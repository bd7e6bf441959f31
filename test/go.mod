module github.com/pullgate/pullgate/test

go 1.26.8

require github.com/pullgate/pullgate v0.0.0

replace github.com/pullgate/pullgate => ../
