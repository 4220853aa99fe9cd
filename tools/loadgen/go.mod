module kbp.io/loadgen

go 1.24
