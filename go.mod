module github.com/varvelog/varve

go 1.26
