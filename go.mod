module github.com/vmscript/vmscript

go 1.26

require (
	github.com/google/goexpect v0.0.0-20210430020637-ab937bf7fd6f
	github.com/spf13/cobra v1.10.2
	github.com/yuin/gopher-lua v1.1.2
)

require (
	github.com/golang/protobuf v1.3.3 // indirect
	github.com/google/goterm v0.0.0-20190703233501-fc88cf888a3f // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	golang.org/x/crypto v0.0.0-20200728195943-123391ffb6de // indirect
	golang.org/x/sys v0.0.0-20190412213103-97732733099d // indirect
	google.golang.org/genproto v0.0.0-20190819201941-24fa4b261c55 // indirect
	google.golang.org/grpc v1.31.0 // indirect
)
